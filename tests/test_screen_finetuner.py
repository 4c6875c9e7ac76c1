"""The fine-tuner on a ``screen:`` collection: real tesseract, the bundled text model, the project's trainer.

The training is held on the hook's Event so the test can see readers answer meanwhile; every
call of tesseract is counted after the screens were indexed and matched once, to show that
training pairs and the re-embedding read the OCR cache only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.collection.named import index_file, open_collection
from core.embedders.cache import shared_cache
from core.online import FineTunerConfig, LightweightFineTuner
from core.screens import render_screen, workflow_descriptions
from core.screens.ocr import clear_shared_ocr_memory
from storage.db import Database
from storage.runs import RunStore
from storage.workspace import Workspace
from tests.conftest import COMPLETED, MatchReader, write_csv

pytestmark = pytest.mark.integration

WORKFLOWS = ("login", "checkout", "file_save")
INDEXED = (0, 2)  # English/light and Russian/light (see core.screens)
CONFIRMED = 1  # a variant that is not indexed


@pytest.fixture()
def screens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Workspace, Database, Path]]:
    """6 screens of 3 workflows indexed with screen:default (with descriptions), 3 more to confirm."""
    workspace = Workspace.open(tmp_path / "ws")
    monkeypatch.setenv("EMBTUNE_HOME", str(workspace.root))  # the OCR cache's disk folder: this workspace
    monkeypatch.setenv("EMBTUNE_OCR_WORKERS", "1")  # tesseract in this process, where the test counts it
    clear_shared_ocr_memory()
    # Earlier tests may have embedded the same seeded screens: with their vectors in the process-wide
    # embedding cache, indexing would skip reading them and leave no OCR text to count on.
    shared_cache().clear()
    db = Database(workspace.db_url())
    folder = tmp_path / "data"
    folder.mkdir()
    descriptions = workflow_descriptions()
    rows = [["id", "image", "workflow_id", "description"]]
    for workflow in WORKFLOWS:
        for variant in (*INDEXED, CONFIRMED):
            render_screen(workflow, variant)[0].save(folder / f"{workflow}{variant}.png")
        rows += [[f"{workflow}-{v}", f"{workflow}{v}.png", workflow, descriptions[workflow]] for v in INDEXED]
    index_file(write_csv(folder / "screens.csv", rows), collection="screens", image_column="image", id_column="id",
               model="screen:default", device="cpu", workspace=workspace, db=db, show_progress=False)
    yield workspace, db, folder
    clear_shared_ocr_memory()  # the process-wide readings would turn later tests' first OCR into a cache hit


def test_screen_collection_trains_its_text_model_while_readers_answer_and_reuses_the_ocr_cache(
        screens, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.embedders.screen as screen_module

    workspace, db, folder = screens
    started, release = threading.Event(), threading.Event()

    def hook(stage: str) -> None:
        if stage == "train_start":
            started.set()
            assert release.wait(60), "the test never released the training"

    tuner = LightweightFineTuner("screens", workspace=workspace, db=db, hook=hook, config=FineTunerConfig(
        trigger_threshold=3, holdout_every=0, epochs=1, learning_rate=1e-4, batch_size=8, device="cpu"))
    old = tuner.serving
    probe = folder / f"login{INDEXED[0]}.png"
    confirmed = [(folder / f"{workflow}{CONFIRMED}.png", workflow) for workflow in WORKFLOWS]
    for image, _ in confirmed:  # what the assistant does first: match the screen the user then confirms
        tuner.match(image)

    ocr_calls: list[int] = []
    real_read_text = screen_module.read_text
    monkeypatch.setattr(screen_module, "read_text", lambda *a, **kw: ocr_calls.append(1) or real_read_text(*a, **kw))

    assert [tuner.confirm(image, workflow) for image, workflow in confirmed] == [False, False, True]
    assert started.wait(10)
    reader = MatchReader(tuner, probe)
    answers = reader.wait_for(3)
    assert len(answers) >= 3, "lookups were blocked by the training"
    assert tuner.training and {fingerprint for fingerprint, _ in answers} == {old.fingerprint}

    release.set()
    assert tuner.wait(180)
    new = tuner.serving
    answers = reader.stop_after(new.fingerprint)

    stats = tuner.stats()
    assert stats.state == "idle" and stats.trainings_run == 1, stats.last_error
    checkpoint = Path(stats.current_checkpoint)
    assert checkpoint.parent == workspace.models_dir / "finetuned" / "screens"
    assert (checkpoint / "modules.json").is_file()  # the checkpoint is the fine-tuned text model's folder
    assert new.checkpoint == str(checkpoint) and new.embedder.spec == f"screen:{checkpoint}"
    assert (new.embedder.languages, new.embedder.layout_weight) == (old.embedder.languages, old.embedder.layout_weight)
    assert new.fingerprint != old.fingerprint and new.generation == old.generation + 1
    assert not np.allclose(new.embedder.encode_images(probe), old.embedder.encode_images(probe), atol=1e-4)
    # Each confirmed screen pairs with its workflow's description and its 2 indexed screens' OCR text.
    entry = stats.metrics_history[0]
    assert entry["status"] == "done" and entry["train_examples"] == 3 and entry["train_pairs"] == 9
    run = RunStore(db).get("finetuner-screens-1")
    assert run is not None and run.status in COMPLETED
    # A reader only ever saw a model with its own index: an indexed screen finds itself at cosine 1.
    assert all(score == pytest.approx(1.0, abs=1e-4) for _, score in answers)
    assert answers[-1][0] == new.fingerprint
    # Training pairs, re-embedding, lookups: all read the OCR cache (the confirmed copies by their bytes' hash).
    assert ocr_calls == []

    reopened = open_collection("screens", workspace=workspace, db=db, device="cpu")
    assert reopened.info.model_fingerprint == new.fingerprint
    restarted = LightweightFineTuner("screens", workspace=workspace, db=db, config=FineTunerConfig(device="cpu"))
    assert restarted.serving.checkpoint == str(checkpoint) and restarted.serving.fingerprint == new.fingerprint
    assert ocr_calls == []
