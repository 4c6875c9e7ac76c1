"""``LightweightFineTuner``: a collection that adapts itself to confirmed matches, in the background.

A desktop assistant matches the current screenshot (or a typed request) against a
collection of recorded workflows; when the user confirms or corrects a match it calls
``confirm(input, workflow_id)``. Every ``trigger_threshold`` new confirmations start a
fine-tune in a daemon thread:

- a ``ClipEmbedder`` gets its image tower fine-tuned contrastively towards the prototypes of
  the confirmed workflows' indexed screenshots (``core.training.clip_tuning``, which says why
  prototypes rather than the workflow's text);
- a ``ScreenEmbedder`` (``screen:``, OCR + a text model) gets its *text model* trained by the
  project's trainer on what tesseract read: (OCR text of the confirmed screenshot, the workflow's
  description) and (that text, the OCR text of each of the workflow's indexed screenshots). The
  readings come from the OCR cache the indexing filled, and the new embedder keeps the old one's
  OCR settings and OCR cache, so neither training nor re-embedding runs tesseract again;
- a text embedder is trained by the project's trainer (``core.training.train``: MNRL on
  (confirmed text, a text of that workflow's items) pairs), so the run is recorded like any
  other.

Lookups (``match`` / ``search``) never wait for training: they read one immutable
*serving* snapshot (embedder + collection built with it). When training ends, the new model
is checkpointed (staging folder + rename), the collection re-embedded into a new index
folder, the database row switched to both in one transaction (what other processes read),
and then the in-process snapshot reference swapped under a lock. A reader therefore gets
either the old model with the old index or the new model with the new index, never a mix.
A failed training changes nothing that serves and records its error.

Held-out evaluation: every ``holdout_every``-th confirmed example (by its database id, so
the choice is stable across trainings) is never trained on; each training records top-1
workflow accuracy on those before and after. Examples and state live in the database
(``storage.db.FineTuneStore``), so a restart keeps them; confirmed images are copied into
the workspace so a deleted temporary screenshot cannot break a later training.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from core.collection import Collection, SearchHit
from core.configs import EmbtuneConfig
from core.embedders.screen import is_screen_spec, parse_screen_spec
from core.errors import CollectionError, EmbtuneError
from core.evaluation.paired import paired_difference
from core.images import ImageInput, image_content_hash, read_image
from core.matching import DEFAULT_GROUP_FIELD, DEFAULT_MATCH_THRESHOLD, MatchResult, match_vector
from core.training.clip_tuning import ClipTuningSettings, save_clip_checkpoint, tune_image_tower
from core.training.gate import REJECTED, decide
from storage.db import Database, FineTuneStore
from storage.workspace import Workspace, atomic_folder

logger = logging.getLogger(__name__)

STATES = ("idle", "training", "failed")
# Fine-tune outputs kept per collection: the serving one and the one before it (a process that read
# the database row just before a swap may still be loading the previous files).
KEEP_OUTPUTS = 2
# Stages the ``hook`` is called at, in order. An exception from the hook at any stage up to
# "before_swap" fails the training (that is how tests inject failures); later ones are logged only.
HOOK_STAGES = ("train_start", "epoch_end", "trained", "checkpoint_saved", "index_built", "before_swap", "swapped",
               "rejected", "failed")

# Per-training entries kept in the stats (the newest); enough for a trend, bounded for a long-running assistant.
HISTORY_LIMIT = 100

Hook = Callable[[str], None]



class _Rejected(Exception):
    """A finished fine-tune that the held-out gate keeps out of service."""

class FineTunerConfig(EmbtuneConfig):
    """Knobs of the background fine-tuner, validated by pydantic (one line per mistake)."""

    _label: ClassVar[str] = "fine-tuner"

    trigger_threshold: PositiveInt = 10
    """Train after this many new confirmations."""
    max_examples: PositiveInt = 1000
    """Keep at most this many confirmed examples per collection; the oldest are dropped."""
    epochs: PositiveInt = 3
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    """Small on purpose: a few confirmations should nudge the model, not rewrite it."""
    batch_size: PositiveInt = 16
    holdout_every: NonNegativeInt = 5
    """Every n-th confirmed example (by id) is held out for the before/after top-1; 0: none (1 would hold out all)."""
    max_holdout_drop: Annotated[float, Field(ge=0, le=1)] | None = 0.0
    """Swap only if held-out top-1 falls by at most this much (None: always swap). A fine-tune that makes
    the confirmed cases worse is kept out of service: the measured screen loop did exactly that once."""
    references_per_workflow: PositiveInt = 32
    """Image models: indexed screenshots averaged into a workflow's prototype. Text models: item texts
    paired with each confirmed query."""
    field: str = DEFAULT_GROUP_FIELD
    """Metadata field that names the workflow."""
    device: str = "auto"
    seed: int = 0

    @field_validator("holdout_every")
    @classmethod
    def _not_everything_held_out(cls, value: int) -> int:
        if value == 1:
            raise ValueError("0 (no hold-out) or 2 and more (1 would hold out everything)")
        return value


@dataclass
class FineTuningStats:
    """What ``stats()`` and ``embtune debug finetuning`` report."""

    collection: str
    state: str
    trainings_run: int
    failures: int
    examples_seen: int
    examples_kept: int
    pending: int
    last_loss: float | None
    current_checkpoint: str | None
    last_error: str | None
    metrics_history: list[dict[str, Any]] = field(default_factory=list)
    trigger_threshold: int | None = None
    max_examples: int | None = None
    model_spec: str | None = None
    index_generation: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable lines (the CLI prints them)."""
        loss = "-" if self.last_loss is None else f"{self.last_loss:.4f}"
        out = [f"collection {self.collection}: {self.state}",
               f"  trainings run {self.trainings_run}, failures {self.failures}",
               f"  examples seen {self.examples_seen}, kept {self.examples_kept}, pending {self.pending}"
               + (f" (trains at {self.trigger_threshold})" if self.trigger_threshold else ""),
               f"  last loss {loss}",
               f"  current checkpoint {self.current_checkpoint or '- (the base model)'}"]
        if self.model_spec:
            out.append(f"  serving {self.model_spec}" + (f", index generation {self.index_generation}"
                                                         if self.index_generation is not None else ""))
        if self.last_error:
            out.append(f"  last error: {self.last_error}")
        for entry in self.metrics_history:
            before, after = entry.get("top1_before"), entry.get("top1_after")
            top1 = (f"top-1 {before:.3f} → {after:.3f} on {entry.get('held_out')} held out"
                    if before is not None and after is not None else "top-1 - (no held-out examples)")
            losses = entry.get("epoch_losses") or []
            loss_text = " → ".join(f"{value:.4f}" for value in losses) if losses else "-"
            examples = entry.get("train_examples", "-")
            out.append(f"  #{entry.get('training')} {entry.get('status')}: {examples} examples, "
                       f"loss {loss_text}, {top1}, {entry.get('seconds', 0):.1f} s"
                       + (f", error: {entry['error']}" if entry.get("error") else ""))
        return out


@dataclass(frozen=True)
class Serving:
    """What lookups use: one embedder and the collection embedded with it. Never mutated once published."""

    embedder: Any
    collection: Collection
    checkpoint: str | None

    @property
    def generation(self) -> int:
        return self.collection.info.generation

    @property
    def fingerprint(self) -> str:
        return self.embedder.fingerprint


@dataclass(frozen=True)
class _Example:
    id: int
    input: str
    workflow_id: str


class LightweightFineTuner:
    """Collects confirmed examples for one collection and fine-tunes its model in the background."""

    def __init__(
        self,
        collection: str,
        *,
        workspace: Workspace,
        db: Database,
        config: FineTunerConfig | None = None,
        hook: Hook | None = None,
    ) -> None:
        from core.collection.named import collection_record, open_collection
        from core.embedders.image import ClipEmbedder
        from core.embedders.screen import ScreenEmbedder
        from core.embedders.text import TextEmbedder

        self.name = collection
        self.workspace = workspace
        self.db = db
        self.config = config or FineTunerConfig()
        self.hook = hook
        self.store = FineTuneStore(db)
        record = collection_record(collection, db)
        opened = open_collection(collection, workspace=workspace, db=db, device=self.config.device)
        if isinstance(opened.embedder, (ClipEmbedder, ScreenEmbedder)):
            self.modality = "image"  # what is confirmed and matched: screenshots
        elif isinstance(opened.embedder, TextEmbedder):
            self.modality = "text"
        else:
            raise EmbtuneError(f"collection {collection!r} uses {type(opened.embedder).__name__}: the fine-tuner "
                               "trains clip: image models, screen: screenshot models (their text model) and "
                               "sentence-transformers text models")
        self._check_field(opened)
        state = self.store.state(collection)
        checkpoint = state.current_checkpoint if state is not None and state.current_checkpoint and \
            _same_model(record.model_spec, state.current_checkpoint) else None
        self._serving = Serving(opened.embedder, opened, checkpoint)
        self._serving_lock = threading.Lock()  # guards the one reference readers take
        self._state_lock = threading.RLock()  # confirm/trigger bookkeeping
        self._thread: threading.Thread | None = None
        if state is not None and state.state == "training":
            # The process that was training stopped (crash, exit): nothing it wrote is serving.
            self.store.update_state(collection, state="failed",
                                    last_error="interrupted: the process stopped during training")
        if state is not None and state.current_checkpoint != checkpoint:
            self.store.update_state(collection, current_checkpoint=checkpoint)

    # -- lookups (never blocked by training) -----------------------------------------------

    @property
    def serving(self) -> Serving:
        """The current (embedder, collection) pair; take it once per lookup."""
        with self._serving_lock:
            return self._serving

    def match(self, input: ImageInput | str, k: int = 3, *, threshold: float = DEFAULT_MATCH_THRESHOLD) -> MatchResult:
        """Top workflows for a screenshot (image models) or a text (text models), from the serving model."""
        serving = self.serving
        vector = self._embed(serving.embedder, [input])[0]
        return match_vector(serving.collection, vector, k, threshold=threshold, field=self.config.field,
                            model_fingerprint=serving.fingerprint)

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Text search in the serving collection (through the text tower for image models)."""
        serving = self.serving
        return serving.collection.search(serving.embedder.encode_query([query]), k)

    # -- confirmations ----------------------------------------------------------------------

    def confirm(self, input: ImageInput | str, workflow_id: str) -> bool:
        """Record that ``input`` belongs to ``workflow_id``; returns True when it started a training."""
        workflow_id = str(workflow_id).strip()
        serving = self.serving
        known = self._workflows(serving.collection)
        if workflow_id not in known:
            listed = ", ".join(sorted(known)[:20])
            raise CollectionError(f"workflow {workflow_id!r} is not in collection {self.name!r} "
                                  f"(workflows: {listed}): index its screenshots/items first")
        stored = self._store_input(input)
        with self._state_lock:
            dropped = self.store.add_example(self.name, kind=self.modality, input=stored, workflow_id=workflow_id,
                                             max_examples=self.config.max_examples)
            self._forget_files(dropped)
            return self._maybe_start()

    def train_now(self) -> bool:
        """Start a training with the kept examples whatever the pending count (False if one is running)."""
        with self._state_lock:
            return self._start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running training (if any) to finish; True when none is running afterwards."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def training(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> FineTuningStats:
        serving = self.serving
        stats = finetuning_stats(self.db, self.name)
        stats.trigger_threshold = self.config.trigger_threshold
        stats.max_examples = self.config.max_examples
        stats.model_spec = serving.embedder.spec
        stats.index_generation = serving.generation
        return stats

    # -- the background training ------------------------------------------------------------

    def _maybe_start(self) -> bool:
        state = self.store.state(self.name)
        if state is None or state.pending < self.config.trigger_threshold:
            return False
        return self._start()

    def _start(self) -> bool:
        if self.training:
            return False  # the pending ones stay pending; checked again when this training ends
        examples = [_Example(e.id, e.input, e.workflow_id) for e in self.store.examples(self.name)]
        if not examples:
            return False
        state = self.store.increment(self.name, attempts=1)
        self.store.update_state(self.name, state="training", pending=0)
        self._thread = threading.Thread(target=self._run, args=(examples, state.attempts),
                                        name=f"finetune-{self.name}-{state.attempts}", daemon=True)
        self._thread.start()
        return True

    def _run(self, examples: list[_Example], attempt: int) -> None:
        started = time.perf_counter()
        entry: dict[str, Any] = {"training": attempt, "started_at": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"), "status": "failed"}
        outputs: list[Path] = []
        try:
            self._call_hook("train_start")
            self._train_and_swap(examples, attempt, entry, outputs)
            entry["status"] = "done"
        except _Rejected as exc:  # trained fine but worse on the held-out confirmations: not served
            entry["status"], entry["error"] = "rejected", str(exc)
            logger.warning("fine-tuning %s rejected: %s", self.name, exc)
            for output in outputs:
                shutil.rmtree(output, ignore_errors=True)
        except BaseException as exc:  # any failure must leave the old model serving, and be recorded
            message = f"{type(exc).__name__}: {exc}".strip()
            entry["error"] = message
            logger.warning("fine-tuning %s failed: %s", self.name, message)
            for output in outputs:
                shutil.rmtree(output, ignore_errors=True)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        with self._state_lock:
            state = self.store.state(self.name)
            history = [*(state.metrics_history if state else []), entry][-HISTORY_LIMIT:]
            if entry["status"] == "done":
                self.store.increment(self.name, trainings_run=1)
                self.store.update_state(self.name, state="idle", last_error=None, metrics_history=history,
                                        last_loss=entry.get("last_loss"), current_checkpoint=entry["checkpoint"])
            elif entry["status"] == "rejected":
                self.store.increment(self.name, trainings_run=1)
                self.store.update_state(self.name, state="idle", last_error=entry["error"], metrics_history=history,
                                        last_loss=entry.get("last_loss"))
            else:
                self.store.increment(self.name, failures=1)
                self.store.update_state(self.name, state="failed", last_error=entry["error"],
                                        metrics_history=history)
            stage = {"done": "swapped", "rejected": "rejected"}.get(entry["status"], "failed")
        try:
            self._call_hook(stage)
        except Exception:  # once the outcome is recorded a hook cannot change it
            logger.exception("fine-tuner hook failed at %s", stage)
        with self._state_lock:
            self._thread = None
            self._maybe_start()  # confirmations that arrived during training may already call for another

    def _train_and_swap(self, examples: list[_Example], attempt: int, entry: dict[str, Any],
                        outputs: list[Path]) -> None:
        old = self.serving
        held_out = [e for e in examples if self.config.holdout_every and e.id % self.config.holdout_every == 0]
        train_set = [e for e in examples if e not in held_out]
        entry.update(examples=len(examples), train_examples=len(train_set), held_out=len(held_out))
        if not train_set:
            raise EmbtuneError("no training examples: every confirmed example is held out for evaluation")
        hits_before = self._hits(old, held_out)
        entry["top1_before"] = float(np.mean(hits_before)) if held_out else None

        checkpoint = self.workspace.models_dir / "finetuned" / self.name / f"ckpt-{attempt}"
        index_folder = self.workspace.finetuning_dir / self.name / f"index-{attempt}"
        outputs += [checkpoint, index_folder]
        if is_screen_spec(old.embedder.spec):
            new_embedder, losses = self._train_screen(old, train_set, checkpoint, attempt, entry)
        elif self.modality == "image":
            new_embedder, losses = self._train_clip(old, train_set, checkpoint)
        else:
            new_embedder, losses = self._train_text(old, train_set, checkpoint, attempt, entry)
        entry.update(epoch_losses=losses, last_loss=losses[-1] if losses else None, checkpoint=str(checkpoint))

        rebuilt = self._reembed(old.collection, new_embedder)
        rebuilt.save(index_folder)  # builds the FAISS index too, so readers never build it lazily
        self._call_hook("index_built")
        new = Serving(new_embedder, rebuilt, str(checkpoint))
        hits_after = self._hits(new, held_out)
        entry["top1_after"] = float(np.mean(hits_after)) if held_out else None
        entry["index_generation"] = rebuilt.info.generation
        if held_out and self.config.max_holdout_drop is not None:
            decision = decide(paired_difference(hits_before, hits_after).to_dict(), metric="held-out top-1",
                              max_drop=self.config.max_holdout_drop)
            entry["gate"] = decision.to_dict()
            if decision.status == REJECTED:
                raise _Rejected(f"{decision.reason}; the current model keeps serving")
        self._call_hook("before_swap")
        # The commit point for other processes: the row names the new model and the new index together.
        self.db.update_collection(self.name, model_spec=new_embedder.spec, model_fingerprint=new_embedder.fingerprint,
                                  dimension=new_embedder.dimension, path=str(index_folder))
        with self._serving_lock:
            self._serving = new
        outputs.clear()  # serving now: never removed by the failure path
        self._prune_outputs(keep={checkpoint, index_folder, *(Path(p) for p in [old.checkpoint,
                                                                                 old.collection.path] if p)})

    def _train_clip(self, old: Serving, train_set: list[_Example], checkpoint: Path) -> tuple[Any, list[float]]:
        from core.embedders import load_embedder

        # A private copy of the weights: the serving model keeps answering, untouched.
        trainable = load_embedder(old.embedder.spec, device=self.config.device, cache=False, reuse=False)
        references: dict[str, list[str]] = {}
        for item_id in old.collection.ids:
            item = old.collection.item(item_id)
            workflow = item["metadata"].get(self.config.field)
            path = item["metadata"].get("image_path")
            if workflow is not None and path:
                references.setdefault(str(workflow), []).append(path)
        settings = ClipTuningSettings(epochs=self.config.epochs, learning_rate=self.config.learning_rate,
                                      batch_size=self.config.batch_size,
                                      references_per_workflow=self.config.references_per_workflow,
                                      seed=self.config.seed)
        losses = tune_image_tower(trainable.model, trainable.preprocess,
                                  [(e.input, e.workflow_id) for e in train_set], references, settings,
                                  on_epoch=lambda _epoch, _loss: self._call_hook("epoch_end"))
        self._call_hook("trained")
        with atomic_folder(checkpoint) as staging:
            save_clip_checkpoint(trainable.model, old.embedder.spec, staging)
        self._call_hook("checkpoint_saved")
        # Loaded back through the public door: what a restart (or another process) will serve.
        return load_embedder(f"clip:{checkpoint}", device=self.config.device, reuse=False), losses

    def _train_text(self, old: Serving, train_set: list[_Example], checkpoint: Path, attempt: int,
                    entry: dict[str, Any]) -> tuple[Any, list[float]]:
        from core.embedders import load_embedder

        texts: dict[str, list[str]] = {}
        for item_id in old.collection.ids:
            item = old.collection.item(item_id)
            workflow = item["metadata"].get(self.config.field)
            if workflow is not None and item["text"]:
                texts.setdefault(str(workflow), []).append(item["text"])
        pairs = [{"anchor": e.input, "positive": text} for e in train_set
                 for text in texts.get(e.workflow_id, [])[: self.config.references_per_workflow]]
        if not pairs:
            raise EmbtuneError("the confirmed workflows have no item texts to pair the examples with")
        losses = self._train_pairs(pairs, old.embedder.spec, checkpoint, attempt, entry)
        return load_embedder(str(checkpoint), device=self.config.device, fallback=False, reuse=False), losses

    def _train_screen(self, old: Serving, train_set: list[_Example], checkpoint: Path, attempt: int,
                      entry: dict[str, Any]) -> tuple[Any, list[float]]:
        """Train a ``screen:`` embedder's text model on OCR text; the checkpoint is that text model's folder.

        Pixels never reach the text model, so what it can learn is to place the words tesseract
        reads on a workflow's screens (in any language, theme or layout) near each other and near
        the workflow's description. The layout part and OCR settings are not trained: the new
        embedder is ``screen:<checkpoint>`` with the old one's languages and layout weight (the
        canonical spec in the collection's row carries them, so a restart reopens the same).
        """
        from core.embedders import load_embedder

        screen = old.embedder
        shots: dict[str, list[str]] = {}
        for item_id in old.collection.ids:
            metadata = old.collection.item(item_id)["metadata"]
            workflow, path = metadata.get(self.config.field), metadata.get("image_path")
            if workflow is not None and path:
                shots.setdefault(str(workflow), []).append(path)
        wanted = {e.workflow_id for e in train_set}
        shots = {workflow: paths[: self.config.references_per_workflow] for workflow, paths in shots.items()
                 if workflow in wanted}
        references = [path for paths in shots.values() for path in paths]
        # read_screens answers from the OCR cache that indexing (references) and matching (examples) filled.
        read = {path: reading.text for path, reading in zip(references, screen.read_screens(references), strict=True)}
        anchors = screen.read_screens([e.input for e in train_set])
        descriptions = self._descriptions(old.collection)
        pairs = []
        for example, reading in zip(train_set, anchors, strict=True):
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

    def _train_pairs(self, pairs: list[dict[str, str]], model_spec: str, checkpoint: Path, attempt: int,
                     entry: dict[str, Any], *, max_seq_length: int | None = None) -> list[float]:
        """MNRL on (anchor, positive) pairs with the project's trainer, so the run is recorded like any other.

        ``max_seq_length``: the base model's, for inputs as long as OCR text (the trainer's 128 would
        leave the tuned model reading less of a screen than the model it replaces).
        """
        import pandas as pd

        from core.training.config import TrainingConfig
        from core.training.train import train

        entry["train_pairs"] = len(pairs)
        losses: list[float] = []
        with tempfile.TemporaryDirectory(prefix="embtune-finetuner-") as tmp:
            data = Path(tmp) / "pairs.csv"
            pd.DataFrame(pairs).to_csv(data, index=False)
            config = TrainingConfig(
                data=str(data), output_dir=str(checkpoint), model=model_spec, loss="mnrl", augment_typos=0,
                matryoshka_dims=[],
                epochs=float(self.config.epochs), batch_size=min(self.config.batch_size, len(pairs)),
                learning_rate=self.config.learning_rate, validation_fraction=0.0, test_fraction=0.0,
                eval_each_epoch=False, keep_best=False, forgetting_check=False, seed=self.config.seed,
                collection=self.name, run_name=f"finetuner-{self.name}-{attempt}", device=self.config.device,
                **({"max_seq_length": int(max_seq_length)} if max_seq_length else {}),
            )

            def on_progress(progress: Any) -> None:
                if progress.loss is not None and (not losses or losses[-1] != progress.loss):
                    losses.append(float(progress.loss))

            # train() writes output_dir through a staging folder + rename, like atomic_folder.
            train(config, db=self.db, progress=on_progress, show_progress=False)
        self._call_hook("trained")
        self._call_hook("checkpoint_saved")
        return losses

    def _reembed(self, old: Collection, embedder: Any) -> Collection:
        """The same items embedded with the new model, as a new collection (the old one keeps serving)."""
        ids = old.ids
        items = [old.item(item_id) for item_id in ids]
        if self.modality == "image":
            vectors = embedder.encode_images([item["metadata"]["image_path"] for item in items], show_progress=False)
        else:
            vectors = embedder.encode_document([item["text"] or "" for item in items], show_progress=False)
        rebuilt = Collection(embedder.dimension, index_kind=old.info.index_kind, embedder=embedder,
                             model_spec=embedder.spec)
        rebuilt.add(ids, vectors, texts=[item["text"] for item in items], metadata=[item["metadata"] for item in items])
        rebuilt.info.generation = old.info.generation  # save() writes the next one
        return rebuilt

    def _hits(self, serving: Serving, held_out: Sequence[_Example]) -> np.ndarray:
        """Per held-out example: 1 when its best workflow is the confirmed one (paired before/after)."""
        if not held_out:
            return np.zeros(0)
        vectors = self._embed(serving.embedder, [e.input for e in held_out])
        return np.array([
            1.0 if (best := match_vector(serving.collection, vector, 1, field=self.config.field).best) is not None
            and best.workflow_id == example.workflow_id else 0.0
            for example, vector in zip(held_out, vectors, strict=True)
        ])

    # -- helpers ----------------------------------------------------------------------------

    def _embed(self, embedder: Any, inputs: Sequence[Any]) -> np.ndarray:
        if self.modality == "image":
            if any(isinstance(value, str) and not Path(value).exists() for value in inputs):
                raise EmbtuneError("an image collection is matched by screenshot: give an image path, PIL image "
                                   "or BGR array")
            return np.asarray(embedder.encode_images(list(inputs), show_progress=False), dtype=np.float32)
        if not all(isinstance(value, str) for value in inputs):
            raise EmbtuneError(f"collection {self.name!r} holds texts: give a text, not an image")
        return np.asarray(embedder.encode_query(list(inputs), show_progress=False), dtype=np.float32)

    def _store_input(self, input: ImageInput | str) -> str:
        """Texts are stored as they are; images are validated and copied into the workspace (by content)."""
        if self.modality == "text":
            if not isinstance(input, str) or not input.strip():
                raise EmbtuneError(f"collection {self.name!r} holds texts: confirm a non-empty text")
            return input.strip()
        from storage.workspace import atomic_path

        image = read_image(input)  # one clear line for a missing, broken or empty image, now rather than later
        folder = self.workspace.finetuning_dir / self.name / "examples"
        if isinstance(input, (str, os.PathLike)):
            # A byte copy keeps the file's content hash, the key of the OCR and embedding caches: a screen:
            # model reads the copy from the cache its match of the original filled, without running tesseract.
            target = folder / f"{image_content_hash(input)[:32]}{Path(input).suffix.lower() or '.png'}"
            if not target.exists():
                with atomic_path(target) as tmp:
                    shutil.copyfile(input, tmp)
            return str(target)
        target = folder / f"{image_content_hash(image)[:32]}.png"
        if not target.exists():
            with atomic_path(target) as tmp:
                image.save(tmp, format="PNG")
        return str(target)

    def _forget_files(self, dropped: list[str]) -> None:
        folder = (self.workspace.finetuning_dir / self.name / "examples").resolve()
        for value in dropped:
            path = Path(value)
            if self.modality == "image" and path.parent.resolve() == folder and \
                    not self.store.is_referenced(self.name, value):
                path.unlink(missing_ok=True)

    def _workflows(self, collection: Collection) -> set[str]:
        return {str(collection.item(i)["metadata"][self.config.field]) for i in collection.ids
                if collection.item(i)["metadata"].get(self.config.field) is not None}

    def _descriptions(self, collection: Collection) -> dict[str, str]:
        """workflow → its description: the items' ``description`` metadata, else the workflows table
        (``workflows.csv``: workflow_id, description) beside the indexed file, the layout of the bundled set."""
        found: dict[str, str] = {}
        for item_id in collection.ids:
            metadata = collection.item(item_id)["metadata"]
            workflow, text = metadata.get(self.config.field), metadata.get("description")
            if workflow is not None and isinstance(text, str) and text.strip():
                found.setdefault(str(workflow), text.strip())
        record = self.db.get_collection(self.name)
        table = Path(record.source).parent / "workflows.csv" if record is not None and record.source else None
        if table is not None and table.is_file():
            import pandas as pd

            frame = pd.read_csv(table, dtype=str).fillna("")
            if {"workflow_id", "description"} <= set(frame.columns):
                for workflow, text in zip(frame["workflow_id"], frame["description"], strict=True):
                    if text.strip():
                        found.setdefault(workflow.strip(), text.strip())
        return found

    def _check_field(self, collection: Collection) -> None:
        if len(collection) and not self._workflows(collection):
            raise CollectionError(f"collection {self.name!r} has no {self.config.field!r} metadata: index a file "
                                  f"with a {self.config.field} column (or set the field)")

    def _call_hook(self, stage: str) -> None:
        if self.hook is not None:
            self.hook(stage)

    def _prune_outputs(self, keep: set[Path]) -> None:
        """Remove fine-tune outputs older than the last ``KEEP_OUTPUTS`` (never the user's own index)."""
        keep = {path.resolve() for path in keep}
        for parent, prefix in ((self.workspace.models_dir / "finetuned" / self.name, "ckpt-"),
                               (self.workspace.finetuning_dir / self.name, "index-")):
            if not parent.exists():
                continue
            folders = sorted((p for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix)
                              and p.name[len(prefix):].isdigit()), key=lambda p: int(p.name[len(prefix):]))
            for folder in folders[:-KEEP_OUTPUTS]:
                if folder.resolve() not in keep:
                    shutil.rmtree(folder, ignore_errors=True)


def _same_model(model_spec: str, checkpoint: str) -> bool:
    """Whether a collection's model spec names this checkpoint folder (``clip:``, ``screen:`` or plain)."""
    spec = parse_screen_spec(model_spec).text_spec if is_screen_spec(model_spec) else model_spec.removeprefix("clip:")
    try:
        return os.path.samefile(spec, checkpoint)
    except OSError:
        return False


def finetuning_stats(db: Database, collection: str) -> FineTuningStats:
    """A collection's fine-tuner numbers from the database alone (no model loaded)."""
    store = FineTuneStore(db)
    state = store.state(collection)
    kept = len(store.examples(collection))
    if state is None:
        return FineTuningStats(collection, "idle", 0, 0, 0, kept, 0, None, None, None, [])
    return FineTuningStats(collection, state.state, state.trainings_run, state.failures, state.examples_seen, kept,
                           state.pending, state.last_loss, state.current_checkpoint, state.last_error,
                           list(state.metrics_history or []))


def all_finetuning_stats(db: Database) -> list[FineTuningStats]:
    """Every collection that has a fine-tuner state (``embtune debug finetuning`` without a name)."""
    return [finetuning_stats(db, state.collection_name) for state in FineTuneStore(db).states()]
