"""Fine-tuning on a tiny model: config checks, losses that fit, runs recorded, cancel, LoRA, the CLI."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from core.embedders import load_embedder
from core.errors import DataError, EmbtuneError
from core.progress import CancelToken
from core.training.config import TrainingConfig
from core.training.measure import overfitting_warnings
from core.training.train import train
from storage.db import Database
from storage.runs import RunStore
from tests.conftest import COMPLETED, write_csv

WORDS = ["chimney", "pipe", "drill", "garden", "hose", "paint", "труба", "дымоход"]


def pairs_file(folder: Path, n: int = 48) -> Path:
    rows = [["anchor", "positive"]]
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 3 + 1) % len(WORDS)]
        rows.append([f"{a} {i}", f"{a} {b} item {i}"])
    return write_csv(folder / "pairs.csv", rows)


def config(tmp_path: Path, model: Path, **overrides) -> TrainingConfig:
    values = {"data": str(pairs_file(tmp_path)), "output_dir": str(tmp_path / "out"), "model": str(model),
              "epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "max_seq_length": 32,
              "forgetting_check": False, "device": "cpu", "augment_typos": 0, "matryoshka_dims": [],
              "similarity_anchor": 0}
    values.update(overrides)
    return TrainingConfig(**values)


def test_config_round_trips_and_refuses_bad_values(tmp_path: Path) -> None:
    cfg = TrainingConfig(data="d.csv", output_dir="out", matryoshka_dims=[64, 384, 128])
    assert cfg.matryoshka_dims == [384, 128, 64]
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    weighted = TrainingConfig(data="d", output_dir="o", matryoshka_dims=[64, 384, 128], matryoshka_weights=[4, 1, 2])
    assert weighted.matryoshka_dims == [384, 128, 64] and weighted.matryoshka_weights == [1.0, 2.0, 4.0]
    with pytest.raises(EmbtuneError, match="matryoshka_weights"):
        TrainingConfig(data="d", output_dir="o", matryoshka_dims=[384, 64], matryoshka_weights=[1])
    with pytest.raises(EmbtuneError, match="unknown key 'epoch'"):
        TrainingConfig.from_dict({"data": "d", "output_dir": "o", "epoch": 3})
    with pytest.raises(EmbtuneError, match="loss='softmax' is not allowed"):
        TrainingConfig(data="d", output_dir="o", loss="softmax")
    with pytest.raises(EmbtuneError, match="batch_size=0"):
        TrainingConfig(data="d", output_dir="o", batch_size=0)
    (tmp_path / "c.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(EmbtuneError, match="not valid JSON"):
        TrainingConfig.from_json(tmp_path / "c.json")


def test_loss_that_does_not_fit_names_the_ones_that_do(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(EmbtuneError, match="loss 'cosent' does not fit pairs data; losses that fit: mnrl, cached_mnrl"):
        train(config(tmp_path, tiny_model_dir, loss="cosent"), show_progress=False)


def test_matryoshka_dims_larger_than_model_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(EmbtuneError, match=r"matryoshka_dims \[64\] are larger than the model's dimension 32"):
        train(config(tmp_path, tiny_model_dir, matryoshka_dims=[64, 16]), show_progress=False)


def test_foreign_output_folder_is_refused_unless_overwrite(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(EmbtuneError, match="exists and is not an embtune run"):
        train(config(tmp_path, tiny_model_dir), show_progress=False)
    assert (tmp_path / "out" / "precious.txt").exists()


def test_empty_split_after_grouping_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [["anchor", "positive"]] + [["same query", f"item {i}"] for i in range(12)]
    with pytest.raises(DataError, match="split is empty after grouping by 'anchor'"):
        train(config(tmp_path, tiny_model_dir, data=str(write_csv(tmp_path / "one.csv", rows))),
              show_progress=False)


def test_scores_outside_unit_range_name_the_row(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [["query", "item", "score"]] + [[f"q{i}", f"item {i}", "0.5"] for i in range(12)] + [["q", "x", "1.7"]]
    with pytest.raises(DataError, match=r"row 13: score .1\.7. is not a number in 0\.\.1"):
        train(config(tmp_path, tiny_model_dir, data=str(write_csv(tmp_path / "s.csv", rows))), show_progress=False)


def test_training_run_is_recorded_and_model_loads(tmp_path: Path, tiny_model_dir: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    snapshots = []
    result = train(config(tmp_path, tiny_model_dir, matryoshka_dims=[32, 16], epochs=2, run_name="r1",
                          collection="shop"), db=db, progress=snapshots.append, show_progress=False)
    assert result.status in COMPLETED and result.loss == "mnrl" and result.data_format == "pairs"
    assert sum(result.split_sizes.values()) == 48
    assert [m["epoch"] for m in result.epoch_metrics] == [1.0, 2.0]
    assert {c["dimension"] for c in result.before_after} == {32, 16}
    assert "| 16 |" in result.table
    assert snapshots[-1].step == snapshots[-1].total_steps > 0
    out = Path(result.output_dir)
    assert (out / "embtune_run.json").exists() and (out / "README.md").exists()
    assert not list(tmp_path.glob(".out.*"))  # checkpoints and staging cleaned up
    tuned = load_embedder(str(out), device="cpu", cache=False)
    base = load_embedder(str(tiny_model_dir), device="cpu", cache=False)
    assert tuned.fingerprint != base.fingerprint
    assert not np.allclose(tuned.encode(["chimney"]), base.encode(["chimney"]))
    run = RunStore(db).get("r1")
    assert run.status in COMPLETED and run.collection_name == "shop" and run.config["epochs"] == 2
    assert len(run.epoch_metrics) == 2 and run.before_after["table"] == result.table
    assert run.dataset_fingerprint and run.finished_at is not None
    # rerunning into our own folder is allowed (it is a run of ours)
    assert train(config(tmp_path, tiny_model_dir, run_name="r2"), db=db, show_progress=False).status in COMPLETED


def test_cancel_from_another_thread_stops_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    token = CancelToken()
    started = threading.Event()

    def on_progress(snapshot) -> None:
        if snapshot.step >= 1:
            started.set()

    watcher = threading.Thread(target=lambda: started.wait(60) and token.cancel())
    watcher.start()
    result = train(config(tmp_path, tiny_model_dir, epochs=50, run_name="c1", batch_size=4), db=db,
                   progress=on_progress, cancel=token, show_progress=False)
    watcher.join()
    assert result.status == "cancelled"
    assert RunStore(db).get("c1").status == "cancelled"
    assert not (tmp_path / "out").exists()


def test_lora_run_trains_an_adapter(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = train(config(tmp_path, tiny_model_dir, lora=True, lora_r=4, learning_rate=5e-3), show_progress=False)
    out = Path(result.output_dir)
    assert (out / "adapter_config.json").exists()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"query", "value"}
    tuned = load_embedder(str(out), device="cpu", cache=False)
    trainable = [n for n, p in tuned.model.named_parameters() if "lora" in n]
    assert trainable
    base = load_embedder(str(tiny_model_dir), device="cpu", cache=False)
    assert not np.allclose(tuned.encode(["chimney pipe"]), base.encode(["chimney pipe"]), atol=1e-6)


def test_cuda_only_precision_falls_back_on_cpu(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = train(config(tmp_path, tiny_model_dir, precision="fp16"), show_progress=False)
    assert result.status in COMPLETED
    assert any("precision fp16 needs a CUDA GPU" in w for w in result.warnings)


def test_overfitting_alarm() -> None:
    metrics = [{"eval_m": 0.5, "train_loss": 3.0}, {"eval_m": 0.45, "train_loss": 2.0},
               {"eval_m": 0.4, "train_loss": 1.0}]
    assert overfitting_warnings(metrics, "eval_m")
    assert not overfitting_warnings(metrics[:2], "eval_m")
    assert not overfitting_warnings([{**m, "eval_m": 0.4 + i * 0.05} for i, m in enumerate(metrics)], "eval_m")


def test_cli_train_then_eval_compares_base_and_run(run_cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    data = pairs_file(tmp_path)
    result = run_cli("train", "--data", str(data), "--output-dir", str(tmp_path / "model"), "--model",
                     str(tiny_model_dir), "--epochs", "1", "--batch-size", "8", "--run-name", "cli-run",
                     "--matryoshka-dims", "32,16", "--device", "cpu", "--no-forgetting-check", "--accept-worse",
                     "--similarity-anchor", "0")
    assert result.code == 0, result.err
    assert "before → after on the test split" in result.out and "| 16 |" in result.out
    steps = int(re.search(r"(\d+) steps", result.out).group(1))
    assert f"step {steps}/{steps}" in result.err  # a line per step when the output is not a terminal
    eval_data = write_csv(tmp_path / "eval.csv", [["query", "item", "score"]] +
                          [[f"{w} {i}", f"{w} item {i}", "1"] for i, w in enumerate(WORDS * 2)])
    report = tmp_path / "report.json"
    result = run_cli("eval", "--data", str(eval_data), "--model", str(tiny_model_dir), "--model", "run:cli-run",
                     "--dims", "32,16", "--json", str(report), "--regressions", "3")
    assert result.code == 0, result.err
    assert "run:cli-run vs" in result.out
    payload = json.loads(report.read_text())
    assert len(payload["results"]) == 2 and payload["results"][1]["per_query"]
    comparison = payload["comparisons"][f"run:cli-run vs {tiny_model_dir}"][0]
    assert {"ci_low", "ci_high", "p_value", "verdict", "wins", "ties", "losses"} <= set(comparison)
    assert report.with_suffix(".md").exists()


def test_cli_train_config_errors_are_one_line(run_cli, tmp_path: Path) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps({"data": "x.csv", "output_dir": "o", "lr": 1}), encoding="utf-8")
    result = run_cli("train", str(tmp_path / "cfg.json"))
    assert result.code == 1 and result.err.strip().startswith("error: training config: unknown key 'lr'")


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_cpu_processes_train_and_rank_zero_writes(tmp_path: Path, tiny_model_dir: Path, launcher: str) -> None:
    import os
    import subprocess
    import sys

    data = pairs_file(tmp_path, n=64)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMBTUNE_HOME": str(tmp_path / "ws"), "HF_HUB_OFFLINE": "1"}
    port = str(_free_port())
    # accelerate has no multi-process CPU mode without MPI; its --multi_gpu launcher starts the ranks and
    # embtune trains them on the CPU with gloo when no GPU is there.
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port] \
        if launcher == "torchrun" else \
        [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port]
    command = [*launch, "-m", "embtune", "train", "--data", str(data), "--output-dir", str(tmp_path / "ddp"),
               "--model", str(tiny_model_dir), "--epochs", "1", "--batch-size", "8", "--run-name", "ddp",
               "--device", "cpu", "--no-forgetting-check", "--accept-worse"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("run ddp")]
    assert len(lines) == 2, done.stdout
    assert any("[rank 0/2]" in line for line in lines) and any("[rank 1/2]" in line for line in lines)
    steps = {line.split(" steps")[0].rsplit(" ", 1)[-1] for line in lines}
    assert len(steps) == 1 and int(steps.pop()) > 0  # both ranks took the same global steps
    assert (tmp_path / "ddp" / "embtune_run.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ddp")] == []
    assert done.stdout.count("before → after on the test split") == 1  # only rank 0 reports and writes


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    token = CancelToken()

    def cancel_after_two_steps(snapshot) -> None:
        if snapshot.step >= 2:
            token.cancel()

    first = train(config(tmp_path, tiny_model_dir, epochs=2, batch_size=4, run_name="res"),
                  progress=cancel_after_two_steps, cancel=token, show_progress=False)
    assert first.status == "cancelled" and 2 <= first.global_steps < 10
    assert list((tmp_path / ".out.checkpoints").glob("checkpoint-*"))
    steps_seen = []
    second = train(config(tmp_path, tiny_model_dir, epochs=2, batch_size=4, run_name="res", resume=True),
                   progress=lambda s: steps_seen.append(s.step), show_progress=False)
    assert second.status in COMPLETED
    assert min(steps_seen) >= first.global_steps  # it did not start again from step 0
    assert second.global_steps > first.global_steps


@pytest.mark.parametrize(
    ("rows", "loss", "data_format"),
    [
        ([["anchor", "positive", "negative"]] + [[f"{w} {i}", f"{w} thing {i}", f"other {i}"]
                                                 for i, w in enumerate(WORDS * 3)], "triplet", "triplets"),
        ([["anchor", "positive", "negative"]] + [[f"{w} {i}", f"{w} thing {i}", f"other {i}"]
                                                 for i, w in enumerate(WORDS * 3)], "cached_mnrl", "triplets"),
        ([["sentence1", "sentence2", "score"]] + [[f"{w} {i}", f"{w} x {i}", str((i % 5) / 4)]
                                                  for i, w in enumerate(WORDS * 3)], "auto", "scored"),
        ([["query", "item", "score"]] + [[f"{w} {i}", f"{w} x {i}", str((i % 2) * 1.0)]
                                         for i, w in enumerate(WORDS * 3)], "contrastive", "scored"),
        ([["text", "label"]] + [[f"{w} {i}", w] for i, w in enumerate(WORDS * 4)], "auto", "classes"),
        ([["text", "label"]] + [[f"{w} {i}", w] for i, w in enumerate(WORDS * 4)], "batch_hard_triplet", "classes"),
    ],
    ids=["triplet", "cached-mnrl", "cosent-auto", "contrastive", "batch-all-triplet", "batch-hard-triplet"],
)
def test_each_loss_trains_on_its_format(tmp_path: Path, tiny_model_dir: Path, rows, loss: str,
                                        data_format: str) -> None:
    data = write_csv(tmp_path / "data.csv", rows)
    result = train(config(tmp_path, tiny_model_dir, data=str(data), loss=loss, mini_batch_size=4),
                   show_progress=False)
    assert result.status in COMPLETED and result.data_format == data_format
    assert result.loss == {"auto": {"scored": "mnrl", "classes": "batch_all_triplet"}.get(data_format),
                           }.get(loss, loss)
    # the loss produced gradients the optimiser followed: the saved model encodes differently from its base
    tuned = load_embedder(result.output_dir, device="cpu", cache=False)
    base = load_embedder(str(tiny_model_dir), device="cpu", cache=False)
    sample = [rows[1][0], rows[2][0]]
    assert not np.allclose(tuned.encode(sample), base.encode(sample), atol=1e-4)


def test_a_classes_run_is_gated_on_its_test_data_and_the_forgetting_set(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Classes have no queries to hold out: given --test-data, the run is measured and gated on it, and the
    forgetting check runs as for any other format; without it nothing is proven."""
    classes = write_csv(tmp_path / "classes.csv", [["text", "label"]] + [[f"{w} {i}", w]
                                                                          for i, w in enumerate(WORDS * 4)])
    held_out = write_csv(tmp_path / "held_out.csv", [["query", "item", "score"]] + [
        [f"{w} query {i}", f"{w} {i}", "1"] for i, w in enumerate(WORDS * 2)])
    general = write_csv(tmp_path / "general.csv", [["query", "item", "score"]] + [
        [f"about {w} {i}", f"a text on {w} number {i}", "1"] for i, w in enumerate(WORDS * 2)])
    gated = train(config(tmp_path, tiny_model_dir, data=str(classes), test_data=str(held_out),
                         forgetting_check=True, forgetting_data=str(general)), show_progress=False)
    assert gated.data_format == "classes" and gated.before_after and gated.forgetting
    assert gated.gate["queries"] == len(WORDS) * 2 and gated.gate["forgetting"]["data"] == "general"
    assert not gated.gate["reason"].startswith("no held-out comparison")
    ungated = train(config(tmp_path, tiny_model_dir, data=str(classes), output_dir=str(tmp_path / "no-test")),
                    show_progress=False)
    assert ungated.status == "not proven" and ungated.gate["reason"].startswith("no held-out comparison")


def test_the_config_names_every_loss_a_format_can_use() -> None:
    """The config's accepted losses and the table that builds them are two lists: they must not drift."""
    from typing import get_args

    from core.training.losses import LOSSES_BY_FORMAT

    accepted = set(get_args(TrainingConfig.model_fields["loss"].annotation)) - {"auto"}
    assert accepted == {loss for losses in LOSSES_BY_FORMAT.values() for loss in losses}


def test_hugging_face_dataset_folder_and_stored_labels_are_sources(tmp_path: Path, tiny_model_dir: Path) -> None:
    import datasets

    folder = tmp_path / "hf"
    datasets.Dataset.from_dict({"anchor": [f"{w} {i}" for i, w in enumerate(WORDS * 4)],
                                "positive": [f"{w} item {i}" for i, w in enumerate(WORDS * 4)]}).save_to_disk(folder)
    assert train(config(tmp_path, tiny_model_dir, data=str(folder)), show_progress=False).status in COMPLETED

    from core.collection.named import index_file
    from storage.workspace import Workspace

    workspace = Workspace.open(tmp_path / "ws")
    db = Database(workspace.db_url())
    items = write_csv(tmp_path / "items.csv", [["id", "name"]] + [[f"P{i}", f"{w} item {i}"]
                                                                  for i, w in enumerate(WORDS * 4)])
    index_file(items, collection="shop", text_column="name", id_column="id", workspace=workspace, db=db,
               model=str(tiny_model_dir))
    db.add_labels([{"collection_name": "shop", "query": f"{w} {i}", "item_key": f"P{i}", "score": 1.0,
                    "annotator": annotator} for i, w in enumerate(WORDS * 4) for annotator in ("ana", "bo")])
    result = train(config(tmp_path, tiny_model_dir, data="labels:shop", output_dir=str(tmp_path / "from-labels")),
                   db=db, show_progress=False)
    assert result.status in COMPLETED and result.data_format == "scored"
    assert result.data_report["rows"] == 32  # two annotators on one pair count once


def test_matryoshka_weights_reach_the_loss(tiny_model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from core.training.losses import build_loss

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    loss = build_loss("mnrl", model, matryoshka_dims=[32, 16], matryoshka_weights=[1.0, 3.0])
    assert list(loss.matryoshka_dims) == [32, 16] and list(loss.matryoshka_weights) == [1.0, 3.0]
    assert list(build_loss("mnrl", model, matryoshka_dims=[32, 16]).matryoshka_weights) == [1, 1]


def test_config_values_are_validated_not_coerced_into_something_else(run_cli, tmp_path: Path) -> None:
    def errors(**values) -> str:
        (tmp_path / "cfg.json").write_text(json.dumps({"data": "x.csv", "output_dir": "o", **values}), encoding="utf-8")
        result = run_cli("train", str(tmp_path / "cfg.json"))
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert result.code == 1 and len(lines) == 1, result.err
        return lines[0]

    # "384" was once read as the dimensions [3, 8, 4]
    assert errors(matryoshka_dims="384") == "error: training config: matryoshka_dims='384' is not allowed: " \
                                           "Input should be a valid list"
    assert "matryoshka_dims [384, 384] must be distinct" in errors(matryoshka_dims=[384, 384])
    # "no" once turned LoRA on; "1" epochs once gave a traceback: both are read as meant
    config = TrainingConfig.from_dict({"data": "d", "output_dir": "o", "lora": "no", "epochs": "1"})
    assert config.lora is False and config.epochs == 1.0
    assert "lora='maybe' is not allowed" in errors(lora="maybe")


@pytest.mark.parametrize("data_format", ["pairs", "triplets", "scored", "classes"])
def test_values_left_out_come_from_the_formats_recipe_and_given_ones_stay(data_format: str) -> None:
    from core.embedders.registry import known_model
    from core.training.recipes import apply_recipe, recipe_for

    recipe = recipe_for(data_format)
    filled = apply_recipe(TrainingConfig(data="d", output_dir="o"), data_format)
    assert (filled.loss, filled.epochs, filled.learning_rate, filled.batch_size, filled.augment_typos,
            filled.similarity_anchor) == (recipe.loss, recipe.epochs, recipe.learning_rate, recipe.batch_size,
                                          recipe.augment_typos, recipe.similarity_anchor)
    # the loss scale a model was trained at comes with the model, for the ones the registry knows
    for spec in ("default", "minilm"):
        scale = apply_recipe(TrainingConfig(data="d", output_dir="o", model=spec), data_format).loss_scale
        assert scale == (recipe.loss_scale or known_model(spec).similarity_scale)
    assert apply_recipe(TrainingConfig(data="d", output_dir="o", model="/some/folder"), data_format).loss_scale == \
        recipe.loss_scale
    given = {"epochs": recipe.epochs + 2, "learning_rate": recipe.learning_rate / 2,
             "batch_size": recipe.batch_size * 2, "augment_typos": recipe.augment_typos + 1,
             "similarity_anchor": 0.0, "loss_scale": 30.0}
    mine = apply_recipe(TrainingConfig(data="d", output_dir="o", **given), data_format)
    assert {key: getattr(mine, key) for key in given} == given


def test_the_similarity_anchor_keeps_the_base_models_cosines_between_corpus_items(tmp_path: Path,
                                                                                  tiny_model_dir: Path) -> None:
    """Two runs on the same pairs at a high learning rate, one with the anchor: the anchored model's cosines
    between the corpus items stay nearer the base model's (what protects search outside the domain)."""
    pairs = pairs_file(tmp_path)
    items = sorted({row.split(",")[1] for row in pairs.read_text(encoding="utf-8").splitlines()[1:]})

    def cosine_drift(model_dir: Path) -> float:
        base = load_embedder(str(tiny_model_dir), device="cpu", cache=False).encode_document(items)
        tuned = load_embedder(str(model_dir), device="cpu", cache=False).encode_document(items)
        return float(np.abs(tuned @ tuned.T - base @ base.T).mean())

    free = train(config(tmp_path, tiny_model_dir, output_dir=str(tmp_path / "free"), learning_rate=3e-3, epochs=2),
                 show_progress=False)
    anchored = train(config(tmp_path, tiny_model_dir, output_dir=str(tmp_path / "anchored"), learning_rate=3e-3,
                            epochs=2, similarity_anchor=1000), show_progress=False)
    assert anchored.global_steps > free.global_steps  # the anchor's own batches ran beside the pairs
    assert cosine_drift(Path(anchored.output_dir)) < 0.5 * cosine_drift(Path(free.output_dir))


def test_the_anchor_reads_the_base_vectors_of_a_collection_indexed_with_the_same_model(
        tmp_path: Path, tiny_model_dir: Path, tiny_model_dir_48: Path) -> None:
    from core.collection.named import index_file
    from core.training.anchor import anchor_dataset, stored_vectors
    from storage.workspace import Workspace

    workspace = Workspace.open(tmp_path / "ws")
    db = Database(workspace.db_url())
    texts = [f"{a} {b} item {i}" for i, (a, b) in enumerate(zip(WORDS, WORDS[1:] + WORDS[:1], strict=True))]
    table = write_csv(tmp_path / "items.csv", [["id", "text"], *[[str(i), t] for i, t in enumerate(texts)]])
    index_file(table, collection="shop", text_column="text", id_column="id", model=str(tiny_model_dir), device="cpu",
               workspace=workspace, db=db, show_progress=False)
    same = load_embedder(str(tiny_model_dir), device="cpu", cache=False).model
    known = stored_vectors("shop", db, same)
    assert set(known) == set(texts)
    read, encoded = anchor_dataset(same, texts, known=known), anchor_dataset(same, texts)
    np.testing.assert_allclose(read["score"], encoded["score"], atol=1e-5)  # the same labels, nothing embedded
    other = load_embedder(str(tiny_model_dir_48), device="cpu", cache=False).model
    assert stored_vectors("shop", db, other) == {}  # another model's vectors are never used


def test_other_trainer_fields_pass_through_and_ones_embtune_sets_are_refused(run_cli, tmp_path: Path) -> None:
    from core.training.arguments import training_arguments

    def arguments(**trainer_args):
        chosen = config(tmp_path, tmp_path, trainer_args=trainer_args)
        return training_arguments(chosen, "mnrl", tmp_path / "ckpt", "fp32", "cpu", 48, False, "ndcg@10", False)

    plain, tuned = arguments(), arguments(weight_decay=0.05, max_grad_norm=0.5)
    assert (plain.weight_decay, plain.max_grad_norm) != (0.05, 0.5)
    assert (tuned.weight_decay, tuned.max_grad_norm) == (0.05, 0.5)
    # the CLI form, one error line each
    output = str(tmp_path / "o")
    result = run_cli("train", "--data", "x.csv", "--output-dir", output, "--trainer-arg", "learning_rate=1")
    assert result.code == 1 and result.err.strip().splitlines() == [
        "error: training config: trainer_args={'learning_rate': 1} is not allowed: 'learning_rate' is set by "
        "embtune: use learning_rate instead"]
    result = run_cli("train", "--data", "x.csv", "--output-dir", output, "--trainer-arg", "wieght_decay=1")
    assert result.code == 1 and "'wieght_decay' is not a SentenceTransformerTrainingArguments field" in result.err
