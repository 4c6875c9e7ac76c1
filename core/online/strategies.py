"""How each kind of model learns from confirmed examples — one ``Strategy`` per modality.

- ``ClipStrategy``: a ``clip:`` embedder's image tower is tuned contrastively towards the prototypes
  of the confirmed workflows' indexed screenshots (``core.training.clip_tuning`` says why prototypes);
- ``ScreenStrategy``: a ``screen:`` embedder (OCR + a text model) gets its *text model* trained on what
  tesseract read: (OCR text of the confirmed screenshot, the workflow's description) and (that text,
  the OCR text of each of the workflow's indexed screenshots). The readings come from the OCR cache
  indexing filled, and the new embedder keeps the old one's OCR settings and cache;
- ``TextStrategy``: a text embedder is trained on (confirmed text, a text of that workflow's items).

Text and screen models train through the project's trainer (``core.training.train``: MNRL), so the run
is recorded like any other. Each returns the new embedder, loaded back through the public door — what
a restart (or another process) will serve — and the losses it saw.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from core.embedders import ClipEmbedder, ScreenEmbedder, TextEmbedder, load_embedder
from core.errors import EmbtuneError
from core.online.config import FineTunerConfig
from core.online.examples import Example, workflow_descriptions
from core.online.serving import Serving
from core.training.clip_tuning import ClipTuningSettings, save_clip_checkpoint, tune_image_tower
from core.training.config import TrainingConfig
from core.training.train import train
from storage.db import Database
from storage.workspace import atomic_folder


class Strategy:
    """Trains a private copy of the serving model on the confirmed examples; the serving one keeps answering."""

    modality: ClassVar[str] = "text"
    """What is confirmed and matched: ``text`` or ``image`` (screenshots)."""

    def __init__(self, config: FineTunerConfig, *, collection: str, db: Database,
                 call_hook: Callable[[str], None]) -> None:
        self.config = config
        self.collection = collection
        self.db = db
        self.call_hook = call_hook

    def train(self, old: Serving, examples: list[Example], checkpoint: Path, attempt: int,
              entry: dict[str, Any]) -> tuple[Any, list[float]]:
        raise NotImplementedError

    def _items_by_workflow(self, old: Serving, key: Callable[[dict[str, Any]], Any]) -> dict[str, list[Any]]:
        """workflow → ``key(item)`` for each of its items (items without a workflow or a value are skipped)."""
        found: dict[str, list[Any]] = {}
        for item_id in old.collection.ids:
            item = old.collection.item(item_id)
            workflow, value = item["metadata"].get(self.config.field), key(item)
            if workflow is not None and value:
                found.setdefault(str(workflow), []).append(value)
        return found

    def _train_pairs(self, pairs: list[dict[str, str]], model_spec: str, checkpoint: Path, attempt: int,
                     entry: dict[str, Any], *, max_seq_length: int | None = None) -> list[float]:
        """MNRL on (anchor, positive) pairs with the project's trainer, so the run is recorded like any other.

        ``max_seq_length``: the base model's, for inputs as long as OCR text (the trainer's 128 would
        leave the tuned model reading less of a screen than the model it replaces).
        """
        entry["train_pairs"] = len(pairs)
        losses: list[float] = []
        with tempfile.TemporaryDirectory(prefix="embtune-finetuner-") as tmp:
            data = Path(tmp) / "pairs.csv"
            pd.DataFrame(pairs).to_csv(data, index=False)
            config = TrainingConfig(
                data=str(data), output_dir=str(checkpoint), model=model_spec, loss="mnrl", augment_typos=0,
                matryoshka_dims=[], similarity_anchor=0,
                epochs=float(self.config.epochs), batch_size=min(self.config.batch_size, len(pairs)),
                learning_rate=self.config.learning_rate, validation_fraction=0.0, test_fraction=0.0,
                eval_each_epoch=False, keep_best=False, forgetting_check=False, seed=self.config.seed,
                collection=self.collection, run_name=f"finetuner-{self.collection}-{attempt}",
                device=self.config.device, **({"max_seq_length": int(max_seq_length)} if max_seq_length else {}),
            )

            def on_progress(progress: Any) -> None:
                if progress.loss is not None and (not losses or losses[-1] != progress.loss):
                    losses.append(float(progress.loss))

            # train() writes output_dir through a staging folder + rename, like atomic_folder.
            train(config, db=self.db, progress=on_progress, show_progress=False)
        self.call_hook("trained")
        self.call_hook("checkpoint_saved")
        return losses


class ClipStrategy(Strategy):
    modality = "image"

    def train(self, old: Serving, examples: list[Example], checkpoint: Path, attempt: int,
              entry: dict[str, Any]) -> tuple[Any, list[float]]:
        # A private copy of the weights: the serving model keeps answering, untouched.
        trainable = load_embedder(old.embedder.spec, device=self.config.device, cache=False, reuse=False)
        references = self._items_by_workflow(old, lambda item: item["metadata"].get("image_path"))
        settings = ClipTuningSettings(epochs=self.config.epochs, learning_rate=self.config.learning_rate,
                                      batch_size=self.config.batch_size,
                                      references_per_workflow=self.config.references_per_workflow,
                                      seed=self.config.seed)
        losses = tune_image_tower(trainable.model, trainable.preprocess,
                                  [(e.input, e.workflow_id) for e in examples], references, settings,
                                  on_epoch=lambda _epoch, _loss: self.call_hook("epoch_end"))
        self.call_hook("trained")
        with atomic_folder(checkpoint) as staging:
            save_clip_checkpoint(trainable.model, old.embedder.spec, staging)
        self.call_hook("checkpoint_saved")
        return load_embedder(f"clip:{checkpoint}", device=self.config.device, reuse=False), losses


class TextStrategy(Strategy):
    modality = "text"

    def train(self, old: Serving, examples: list[Example], checkpoint: Path, attempt: int,
              entry: dict[str, Any]) -> tuple[Any, list[float]]:
        texts = self._items_by_workflow(old, lambda item: item["text"])
        pairs = [{"anchor": e.input, "positive": text} for e in examples
                 for text in texts.get(e.workflow_id, [])[: self.config.references_per_workflow]]
        if not pairs:
            raise EmbtuneError("the confirmed workflows have no item texts to pair the examples with")
        losses = self._train_pairs(pairs, old.embedder.spec, checkpoint, attempt, entry)
        return load_embedder(str(checkpoint), device=self.config.device, fallback=False, reuse=False), losses


class ScreenStrategy(Strategy):
    """The checkpoint is the text model's folder; the new embedder is ``screen:<checkpoint>``.

    Pixels never reach the text model, so what it can learn is to place the words tesseract reads on a
    workflow's screens (in any language, theme or layout) near each other and near the workflow's
    description. The layout part and OCR settings are not trained: the new embedder keeps the old one's
    languages and layout weight (the canonical spec in the collection's row carries them).
    """

    modality = "image"

    def train(self, old: Serving, examples: list[Example], checkpoint: Path, attempt: int,
              entry: dict[str, Any]) -> tuple[Any, list[float]]:
        screen = old.embedder
        wanted = {e.workflow_id for e in examples}
        shots = {workflow: paths[: self.config.references_per_workflow] for workflow, paths in
                 self._items_by_workflow(old, lambda item: item["metadata"].get("image_path")).items()
                 if workflow in wanted}
        references = [path for paths in shots.values() for path in paths]
        # read_screens answers from the OCR cache that indexing (references) and matching (examples) filled.
        read = {path: reading.text for path, reading in zip(references, screen.read_screens(references), strict=True)}
        anchors = screen.read_screens([e.input for e in examples])
        record = self.db.get_collection(self.collection)
        descriptions = workflow_descriptions(old.collection, self.config.field, record.source if record else None)
        pairs = []
        for example, reading in zip(examples, anchors, strict=True):
            positives = [descriptions.get(example.workflow_id, ""),
                         *(read[path] for path in shots.get(example.workflow_id, []))]
            # A screen where nothing was read teaches the text model nothing; the same text is no pair either
            # (a confirmed screenshot that is itself indexed).
            pairs += [{"anchor": reading.text, "positive": text} for text in positives
                      if reading.text and text and text != reading.text]
        if not pairs:
            raise EmbtuneError("no OCR text to train on: tesseract read nothing on the confirmed screenshots, "
                               "or their workflows have no description and no other indexed screenshot with text")
        text_model = screen.text_embedder
        losses = self._train_pairs(pairs, text_model.spec, checkpoint, attempt, entry,
                                   max_seq_length=getattr(text_model.model, "max_seq_length", None))
        tuned = load_embedder(str(checkpoint), device=self.config.device, fallback=False, reuse=False)
        return screen.with_text_embedder(tuned), losses


def strategy_for(embedder: Any) -> type[Strategy] | None:
    """The strategy that trains this embedder, None when the fine-tuner cannot train it."""
    if isinstance(embedder, ScreenEmbedder):
        return ScreenStrategy
    if isinstance(embedder, ClipEmbedder):
        return ClipStrategy
    if isinstance(embedder, TextEmbedder):
        return TextStrategy
    return None
