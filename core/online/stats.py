"""What the background fine-tuner reports (``stats()``, ``embtune debug finetuning``, the demos'
panel): its state, counts, losses and the held-out top-1 of each training, from the database alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from storage.db import Database
from storage.finetune import FineTuneStore


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
