"""``LightweightFineTuner``: a collection that adapts itself to confirmed matches, in the background.

A desktop assistant matches the current screenshot (or a typed request) against a collection of
recorded workflows; when the user confirms or corrects a match it calls ``confirm(input,
workflow_id)``. Every ``trigger_threshold`` new confirmations start a fine-tune in a daemon thread,
by the strategy for the collection's model (``core.online.strategies``). Lookups (``match`` /
``search``) never wait for training: they read one immutable serving snapshot, swapped only when a
training has finished and passed the gate (``core.online.serving``). A failed training changes
nothing that serves and records its error.

Held-out evaluation: every ``holdout_every``-th confirmed example (by its database id, so the choice
is stable across trainings) is never trained on; each training records top-1 workflow accuracy on
those before and after, paired, and the gate (``core.training.gate``) keeps a worse model out.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.collection import SearchHit
from core.collection.catalogue import collection_lock
from core.collection.named import collection_record, open_collection
from core.errors import CollectionError, EmbtuneError
from core.evaluation.paired import paired_difference
from core.images import ImageInput
from core.matching import DEFAULT_MATCH_THRESHOLD, MatchResult, match_vector
from core.online.config import FineTunerConfig
from core.online.examples import Example, ExampleStore, workflows
from core.online.serving import Serving, embed_inputs, prune_outputs, reembedded, same_model
from core.online.stats import FineTuningStats, finetuning_stats
from core.online.strategies import strategy_for
from core.training.gate import REJECTED, decide
from storage.db import Database
from storage.finetune import FineTuneStore
from storage.workspace import Workspace

logger = logging.getLogger(__name__)

STATES = ("idle", "training", "failed")
# Stages the ``hook`` is called at, in order. An exception from the hook at any stage up to
# "before_swap" fails the training (that is how tests inject failures); later ones are logged only.
HOOK_STAGES = ("train_start", "epoch_end", "trained", "checkpoint_saved", "index_built", "before_swap", "swapped",
               "rejected", "failed")
# Per-training entries kept in the stats (the newest); enough for a trend, bounded for a long-running assistant.
HISTORY_LIMIT = 100

Hook = Callable[[str], None]


class _Rejected(Exception):
    """A finished fine-tune that the held-out gate keeps out of service."""


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
        self.name = collection
        self.workspace = workspace
        self.db = db
        self.config = config or FineTunerConfig()
        self.hook = hook
        self.store = FineTuneStore(db)
        record = collection_record(collection, db)
        opened = open_collection(collection, workspace=workspace, db=db, device=self.config.device)
        strategy = strategy_for(opened.embedder)
        if strategy is None:
            raise EmbtuneError(f"collection {collection!r} uses {type(opened.embedder).__name__}: the fine-tuner "
                               "trains clip: image models, screen: screenshot models (their text model) and "
                               "sentence-transformers text models")
        self.strategy = strategy(self.config, collection=collection, db=db, call_hook=self._call_hook)
        self.modality = self.strategy.modality
        self.examples = ExampleStore(collection, workspace=workspace, db=db, modality=self.modality)
        if len(opened) and not workflows(opened, self.config.field):
            raise CollectionError(f"collection {self.name!r} has no {self.config.field!r} metadata: index a file "
                                  f"with a {self.config.field} column (or set the field)")
        state = self.store.state(collection)
        checkpoint = state.current_checkpoint if state is not None and state.current_checkpoint and \
            same_model(record.model_spec, state.current_checkpoint) else None
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
        vector = embed_inputs(serving.embedder, [input], self.modality, self.name)[0]
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
        known = workflows(serving.collection, self.config.field)
        if workflow_id not in known:
            listed = ", ".join(sorted(known)[:20])
            raise CollectionError(f"workflow {workflow_id!r} is not in collection {self.name!r} "
                                  f"(workflows: {listed}): index its screenshots/items first")
        with self._state_lock:
            self.examples.add(input, workflow_id, max_examples=self.config.max_examples)
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
        examples = self.examples.examples()
        if not examples:
            return False
        state = self.store.increment(self.name, attempts=1)
        self.store.update_state(self.name, state="training", pending=0)
        self._thread = threading.Thread(target=self._run, args=(examples, state.attempts),
                                        name=f"finetune-{self.name}-{state.attempts}", daemon=True)
        self._thread.start()
        return True

    def _run(self, examples: list[Example], attempt: int) -> None:
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

    def _train_and_swap(self, examples: list[Example], attempt: int, entry: dict[str, Any],
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
        new_embedder, losses = self.strategy.train(old, train_set, checkpoint, attempt, entry)
        entry.update(epoch_losses=losses, last_loss=losses[-1] if losses else None, checkpoint=str(checkpoint))

        rebuilt = reembedded(old.collection, new_embedder, self.modality)
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
        # The commit point for other processes: the row names the new model and the new index together, under the
        # collection's writer lock, and only while it still names what this training started from.
        with collection_lock(self.workspace, self.name):
            now = collection_record(self.name, self.db)
            if Path(now.path) != Path(old.collection.path) or now.generation not in (None, old.generation):
                raise EmbtuneError(f"collection {self.name!r} was indexed again during the fine-tune: the new model "
                                   "is not swapped in")
            self.db.update_collection(self.name, model_spec=new_embedder.spec,
                                      model_fingerprint=new_embedder.fingerprint, dimension=new_embedder.dimension,
                                      path=str(index_folder), generation=rebuilt.info.generation)
            with self._serving_lock:
                self._serving = new
        outputs.clear()  # serving now: never removed by the failure path
        prune_outputs(self.workspace, self.name, keep={checkpoint, index_folder, *(Path(p) for p in [old.checkpoint,
                                                                                 old.collection.path] if p)})


    def _hits(self, serving: Serving, held_out: Sequence[Example]) -> np.ndarray:
        """Per held-out example: 1 when its best workflow is the confirmed one (paired before/after)."""
        if not held_out:
            return np.zeros(0)
        vectors = embed_inputs(serving.embedder, [e.input for e in held_out], self.modality, self.name)
        return np.array([
            1.0 if (best := match_vector(serving.collection, vector, 1, field=self.config.field).best) is not None
            and best.workflow_id == example.workflow_id else 0.0
            for example, vector in zip(held_out, vectors, strict=True)
        ])

    # -- helpers ----------------------------------------------------------------------------

    def _call_hook(self, stage: str) -> None:
        if self.hook is not None:
            self.hook(stage)
