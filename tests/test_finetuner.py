"""The background fine-tuner on a tiny open_clip model (and once on a tiny text model).

Training is made observable through the fine-tuner's hook: a test holds it on an Event at
"train_start" and checks that lookups keep answering from the old model meanwhile, then
releases it and checks the swap (new checkpoint, new index generation, new answers).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from core.collection.named import index_file, open_collection
from core.errors import CollectionError, EmbtuneError, ImageError
from core.online import FineTunerConfig, LightweightFineTuner, finetuning_stats
from storage.db import Database
from storage.finetune import FineTuneStore
from storage.workspace import Workspace
from tests.conftest import COMPLETED, MatchReader, write_csv
from tests.test_images import WORKFLOWS, screen
from tests.test_storage import postgres_url  # noqa: F401 - a real PostgreSQL server for the store test

# Big enough that 3 epochs visibly move a random tiny model; the real default (1e-5) is for real CLIPs.
# Random tiny weights: held-out top-1 moves by chance, so these tests swap whatever it says (the gate
# has its own test below).
FAST = {"epochs": 3, "learning_rate": 1e-3, "batch_size": 8, "max_holdout_drop": None}


@pytest.fixture()
def env(tmp_path: Path, tiny_clip_dir: Path) -> tuple[Workspace, Database, Path]:
    """12 screenshots of 3 workflows indexed as 'screens', plus 3 unindexed ones per workflow to confirm."""
    workspace = Workspace.open(tmp_path / "ws")
    db = Database(workspace.db_url())
    folder = tmp_path / "data"
    (folder / "shots").mkdir(parents=True)
    (folder / "new").mkdir()
    rows = [["id", "image", "workflow_id"]]
    for workflow, colour in WORKFLOWS.items():
        for variant in range(4):
            screen(folder / "shots" / f"{workflow}{variant}.png", colour, variant)
            rows.append([f"{workflow}-{variant}", f"shots/{workflow}{variant}.png", workflow])
        for variant in range(4, 7):
            screen(folder / "new" / f"{workflow}{variant}.png", colour, variant)
    table = write_csv(folder / "screens.csv", rows)
    index_file(table, collection="screens", image_column="image", id_column="id", model=f"clip:{tiny_clip_dir}",
               device="cpu", workspace=workspace, db=db, show_progress=False)
    return workspace, db, folder


def confirmations(folder: Path) -> list[tuple[Path, str]]:
    """Unindexed screenshots with their true workflow, interleaved across workflows."""
    return [(folder / "new" / f"{workflow}{variant}.png", workflow)
            for variant in range(4, 7) for workflow in WORKFLOWS]


def tuner_for(env, hook=None, **config) -> LightweightFineTuner:
    workspace, db, _ = env
    return LightweightFineTuner("screens", workspace=workspace, db=db, hook=hook,
                                config=FineTunerConfig(device="cpu", **{**FAST, **config}))


def test_training_runs_in_background_while_readers_get_old_answers_then_swaps_atomically(env) -> None:
    workspace, db, folder = env
    started, release = threading.Event(), threading.Event()
    stages: list[str] = []

    def hook(stage: str) -> None:
        stages.append(stage)
        if stage == "train_start":
            started.set()
            assert release.wait(60), "the test never released the training"

    tuner = tuner_for(env, hook=hook, trigger_threshold=5)
    old = tuner.serving
    probe = folder / "shots" / "login1.png"
    old_vector = old.embedder.encode_images(probe)
    examples = confirmations(folder)

    for image, workflow in examples[:4]:
        assert tuner.confirm(image, workflow) is False
    assert tuner.stats().pending == 4 and not tuner.training
    assert tuner.confirm(*examples[4]) is True  # the 5th confirmation triggers
    assert started.wait(10)

    reader = MatchReader(tuner, probe)
    held = reader.wait_for(5)
    assert len(held) >= 5, "lookups were blocked by the training"
    assert tuner.training and tuner.stats().state == "training"
    assert {fingerprint for fingerprint, _ in held} == {old.fingerprint}

    release.set()
    assert tuner.wait(120)
    new = tuner.serving
    answers = reader.stop_after(new.fingerprint)

    assert stages[:2] == ["train_start", "epoch_end"] and stages[-2:] == ["before_swap", "swapped"]
    # Every answer, before, during and after the swap, came from one model with its own index:
    # an indexed screenshot always finds itself at cosine 1 (a new model over the old index would not).
    assert all(score == pytest.approx(1.0, abs=1e-4) for _, score in answers)
    assert {fingerprint for fingerprint, _ in answers} == {old.fingerprint, new.fingerprint}
    assert answers[-1][0] == new.fingerprint

    stats = tuner.stats()
    assert stats.state == "idle" and stats.trainings_run == 1 and stats.pending == 0 and stats.last_error is None
    assert stats.examples_seen == 5 and stats.last_loss is not None
    checkpoint = Path(stats.current_checkpoint)
    assert checkpoint.parent == workspace.models_dir / "finetuned" / "screens"
    assert (checkpoint / "open_clip_config.json").is_file() and (checkpoint / "open_clip_model.safetensors").is_file()
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert new.checkpoint == str(checkpoint) and new.embedder.spec == f"clip:{checkpoint}"
    assert new.generation == old.generation + 1 and new.collection.path != old.collection.path
    assert new.fingerprint != old.fingerprint
    new_vector = new.embedder.encode_images(probe)
    assert not np.allclose(new_vector, old_vector, atol=1e-4)
    np.testing.assert_allclose(old.embedder.encode_images(probe), old_vector, atol=1e-6)  # old model untouched
    entry = stats.metrics_history[0]
    assert entry["status"] == "done" and entry["train_examples"] == 4 and entry["held_out"] == 1
    assert len(entry["epoch_losses"]) == 3 and all(np.isfinite(entry["epoch_losses"]))
    assert entry["epoch_losses"][-1] < entry["epoch_losses"][0]  # it really trained on the confirmed examples
    assert 0.0 <= entry["top1_before"] <= 1.0 and 0.0 <= entry["top1_after"] <= 1.0

    # Another process (here: a fresh open) reads the swapped pair from the database.
    reopened = open_collection("screens", workspace=workspace, db=db, device="cpu")
    assert reopened.info.model_fingerprint == new.fingerprint
    np.testing.assert_allclose(reopened.embedder.encode_images(probe), new_vector, atol=1e-5)
    assert reopened.search(new_vector, 1)[0].id == "login-1"


def test_failed_training_keeps_the_old_model_serving_and_records_the_error(env) -> None:
    workspace, db, folder = env

    def hook(stage: str) -> None:
        if stage == "epoch_end":
            raise RuntimeError("disk on fire")

    tuner = tuner_for(env, hook=hook, trigger_threshold=3)
    old = tuner.serving
    record_before = db.get_collection("screens")
    for image, workflow in confirmations(folder)[:3]:
        tuner.confirm(image, workflow)
    assert tuner.wait(120)

    stats = tuner.stats()
    assert stats.state == "failed" and stats.failures == 1 and stats.trainings_run == 0
    assert stats.last_error == "RuntimeError: disk on fire" and stats.current_checkpoint is None
    assert stats.metrics_history[-1]["status"] == "failed" and "disk on fire" in stats.metrics_history[-1]["error"]
    assert tuner.serving is old
    assert tuner.match(folder / "shots" / "checkout2.png").model_fingerprint == old.fingerprint
    record = db.get_collection("screens")
    assert (record.model_spec, record.path) == (record_before.model_spec, record_before.path)
    finetuned = workspace.models_dir / "finetuned" / "screens"
    assert not finetuned.exists() or not any(finetuned.iterdir()), "a failed training left files behind"

    # The next training (hook fixed) succeeds and clears the error.
    tuner.hook = None
    assert tuner.train_now() and tuner.wait(120)
    assert tuner.stats().state == "idle" and tuner.stats().last_error is None
    assert tuner.serving.fingerprint != old.fingerprint


def test_a_fine_tune_worse_on_held_out_confirmations_is_not_swapped_in(tmp_path: Path) -> None:
    """Confirmations that teach the wrong workflow make a genuinely worse model (no score is patched): the
    held-out one, confirmed right, is then answered wrongly, and the gate keeps the old model serving."""
    workspace = Workspace.open(tmp_path / "ws")
    db = Database(workspace.db_url())
    rows = [["id", "text", "workflow_id"],
            ["1", "open the settings", "settings"], ["2", "change my password", "settings"],
            ["3", "notification preferences", "settings"], ["4", "pay for the order", "checkout"],
            ["5", "add to cart and pay", "checkout"], ["6", "enter card details", "checkout"]]
    index_file(write_csv(tmp_path / "flows.csv", rows), collection="flows", text_column="text", id_column="id",
               model="minilm", device="cpu", workspace=workspace, db=db, show_progress=False)
    holdout_every = 5  # the 5th confirmation (by id) is held out
    tuner = LightweightFineTuner("flows", workspace=workspace, db=db, config=FineTunerConfig(
        trigger_threshold=holdout_every, holdout_every=holdout_every, max_holdout_drop=0.0, learning_rate=1e-3,
        epochs=10, device="cpu"))
    old, record_before = tuner.serving, db.get_collection("flows")
    for text in ("adjust my preferences", "my preferences please", "preferences page", "change preferences"):
        tuner.confirm(text, "checkout")  # wrong on purpose
    tuner.confirm("where can I adjust my preferences", "settings")  # held out, right
    assert tuner.wait(180)
    stats = tuner.stats()
    assert stats.state == "idle" and stats.trainings_run == 1 and stats.failures == 0
    entry = stats.metrics_history[-1]
    assert entry["held_out"] == 1 and entry["top1_before"] == 1.0, "the base model must answer the held-out right"
    assert entry["status"] == "rejected" and entry["top1_after"] == 0.0
    assert entry["gate"]["status"] == "rejected" and "held-out top-1 fell 1.0000 → 0.0000" in stats.last_error
    assert tuner.serving is old and stats.current_checkpoint is None
    assert (db.get_collection("flows").model_spec, db.get_collection("flows").path) == \
        (record_before.model_spec, record_before.path)
    finetuned = workspace.models_dir / "finetuned" / "flows"
    assert not finetuned.exists() or not any(finetuned.iterdir()), "a rejected training left files behind"


def test_max_examples_keeps_the_newest_and_deletes_dropped_image_copies(env) -> None:
    workspace, db, folder = env
    tuner = tuner_for(env, trigger_threshold=100, max_examples=4)
    examples = confirmations(folder)
    for image, workflow in examples[:7]:
        assert tuner.confirm(image, workflow) is False
    kept = FineTuneStore(db).examples("screens")
    assert len(kept) == 4 and tuner.stats().examples_kept == 4 and tuner.stats().examples_seen == 7
    assert [e.workflow_id for e in kept] == [workflow for _, workflow in examples[3:7]]
    copies = sorted((workspace.finetuning_dir / "screens" / "examples").iterdir())
    assert sorted(Path(e.input) for e in kept) == copies  # the 3 dropped copies are gone


def test_restart_restores_examples_stats_and_serves_the_checkpoint(env) -> None:
    workspace, _, folder = env
    tuner = tuner_for(env, trigger_threshold=3)
    examples = confirmations(folder)
    for image, workflow in examples[:3]:
        tuner.confirm(image, workflow)
    assert tuner.wait(120)
    tuner.confirm(*examples[3])
    before = tuner.stats()
    fingerprint = tuner.serving.fingerprint

    restarted = tuner_for(env, trigger_threshold=3)
    after = restarted.stats()
    assert after.to_dict() == before.to_dict()
    assert (after.trainings_run, after.examples_seen, after.pending, after.examples_kept) == (1, 4, 1, 4)
    assert restarted.serving.fingerprint == fingerprint and restarted.serving.checkpoint == before.current_checkpoint
    # Two more confirmations reach the threshold again with the restored pending count.
    restarted.confirm(*examples[4])
    assert restarted.confirm(*examples[5]) is True
    assert restarted.wait(120) and restarted.stats().trainings_run == 2
    # Only the last two fine-tune outputs are kept on disk.
    assert len(list((workspace.models_dir / "finetuned" / "screens").iterdir())) == 2


def test_confirm_refuses_unknown_workflows_bad_images_and_bad_settings(env, tmp_path: Path) -> None:
    _, _, folder = env
    tuner = tuner_for(env)
    with pytest.raises(CollectionError, match=r"workflow 'payroll' is not in collection 'screens' \(workflows: "
                                              r"checkout, login, settings\)"):
        tuner.confirm(folder / "new" / "login4.png", "payroll")
    broken = tmp_path / "broken.png"
    broken.write_text("not pixels")
    with pytest.raises(ImageError, match=r"broken\.png"):
        tuner.confirm(broken, "login")
    with pytest.raises(EmbtuneError, match="trigger_threshold=0 is not allowed"):
        FineTunerConfig(trigger_threshold=0)
    with pytest.raises(EmbtuneError, match="holdout_every=1"):
        FineTunerConfig(holdout_every=1)
    assert tuner.stats().examples_seen == 0
    # A BGR array (what OpenCV gives) is accepted and stored as a PNG copy.
    bgr = np.zeros((24, 32, 3), np.uint8)
    bgr[:, :, 2] = 200
    tuner.confirm(bgr, "settings")
    (stored,) = FineTuneStore(tuner.db).examples("screens")
    assert stored.input.endswith(".png") and Path(stored.input).is_file()


def test_cli_confirm_trains_at_the_threshold_and_debug_prints_the_stats(env, run_cli) -> None:
    workspace, _, folder = env
    base = ["--workspace", str(workspace.root)]
    examples = confirmations(folder)
    for image, workflow in examples[:2]:
        result = run_cli(*base, "confirm", "screens", str(image), workflow, "--trigger-threshold", "3",
                         "--learning-rate", "1e-3", "--device", "cpu")
        assert result.code == 0, result.err
        assert "pending of 3" in result.out
    result = run_cli(*base, "confirm", "screens", str(examples[2][0]), examples[2][1], "--trigger-threshold", "3",
                     "--learning-rate", "1e-3", "--device", "cpu")
    assert result.code == 0, result.err
    assert "fine-tuning screens" in result.out and "trainings run 1, failures 0" in result.out

    shown = run_cli(*base, "debug", "finetuning", "--collection", "screens")
    assert shown.code == 0, shown.err
    assert "collection screens: idle" in shown.out and "examples seen 3, kept 3, pending 0" in shown.out
    assert "current checkpoint " + str(workspace.models_dir / "finetuned" / "screens" / "ckpt-1") in shown.out
    assert "#1 done: 3 examples, loss" in shown.out
    as_json = json.loads(run_cli(*base, "debug", "finetuning", "--json").out)
    assert as_json[0]["collection"] == "screens" and as_json[0]["trainings_run"] == 1
    missing = run_cli(*base, "debug", "finetuning", "--collection", "nope")
    assert missing.code == 1 and "collection 'nope' does not exist" in missing.err


def test_text_collection_is_fine_tuned_with_the_project_trainer(tmp_path: Path, tiny_model_dir: Path) -> None:
    from storage.runs import RunStore

    workspace = Workspace.open(tmp_path / "ws")
    db = Database(workspace.db_url())
    rows = [["id", "text", "workflow_id"], ["1", "open the settings", "settings"], ["2", "change my password",
            "settings"], ["3", "pay for the order", "checkout"], ["4", "add to cart and pay", "checkout"]]
    table = write_csv(tmp_path / "flows.csv", rows)
    index_file(table, collection="flows", text_column="text", id_column="id", model=str(tiny_model_dir),
               device="cpu", workspace=workspace, db=db, show_progress=False)
    tuner = LightweightFineTuner("flows", workspace=workspace, db=db,
                                 config=FineTunerConfig(trigger_threshold=4, holdout_every=0, learning_rate=1e-3,
                                                        device="cpu"))
    old = tuner.serving
    for text, workflow in [("settings please", "settings"), ("pay now", "checkout"), ("password reset", "settings"),
                           ("checkout", "checkout")]:
        tuner.confirm(text, workflow)
    assert tuner.wait(180)
    stats = tuner.stats()
    assert stats.state == "idle" and stats.trainings_run == 1, stats.last_error
    new = tuner.serving
    assert (Path(new.checkpoint) / "modules.json").is_file() and new.embedder.spec == new.checkpoint
    assert new.fingerprint != old.fingerprint and new.generation == old.generation + 1
    assert not np.allclose(new.embedder.encode("pay now"), old.embedder.encode("pay now"), atol=1e-5)
    assert tuner.match("pay now", k=2).model_fingerprint == new.fingerprint
    run = RunStore(db).get("finetuner-flows-1")
    assert run is not None and run.status in COMPLETED and run.collection_name == "flows"
    assert finetuning_stats(db, "flows").current_checkpoint == new.checkpoint


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'embtune.db'}")
    from storage.tables import Base

    database = Database(request.getfixturevalue("postgres_url"))
    Base.metadata.drop_all(database.engine)
    Base.metadata.create_all(database.engine)
    return database


def test_finetune_store_counts_trims_and_persists_on_sqlite_and_postgres(storage_db: Database) -> None:
    store = FineTuneStore(storage_db)
    for number in range(5):
        dropped = store.add_example("c", kind="text", input=f"query {number}", workflow_id="w", max_examples=3)
        assert dropped == ([] if number < 3 else [f"query {number - 3}"])
    assert [e.input for e in store.examples("c")] == ["query 2", "query 3", "query 4"]
    assert store.is_referenced("c", "query 4") and not store.is_referenced("c", "query 0")
    state = store.increment("c", attempts=1, failures=1)
    assert (state.examples_seen, state.pending, state.attempts, state.failures) == (5, 5, 1, 1)
    store.update_state("c", state="idle", metrics_history=[{"training": 1, "top1_after": 0.5}], last_loss=0.25)
    again = FineTuneStore(Database(storage_db.url)).state("c")
    assert again.metrics_history == [{"training": 1, "top1_after": 0.5}] and again.last_loss == 0.25
    assert [s.collection_name for s in store.states()] == ["c"] and store.state("other") is None
