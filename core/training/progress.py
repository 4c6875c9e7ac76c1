"""Training progress for the console, the studio and tests, and cancel from another thread.

``ProgressBridge`` is a Hugging Face ``TrainerCallback``: it turns the trainer's logs into
``TrainingProgress`` snapshots (step, epoch, loss, eval metrics, ETA), keeps per-epoch
metrics, and stops training at the next step once the cancel token is set (the trainer
then saves a checkpoint, so the run can be resumed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import TrainerCallback

from core.progress import CancelToken

UPDATE_INTERVAL_S = 2.0  # how often storage hears about progress (every log would be too chatty)


@dataclass
class TrainingProgress:
    step: int
    total_steps: int
    epoch: float
    loss: float | None
    elapsed_s: float
    eta_s: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrainingProgressCallback = Callable[[TrainingProgress], None]


class ProgressBridge(TrainerCallback):
    def __init__(self, progress: TrainingProgressCallback | None = None, cancel: CancelToken | None = None) -> None:
        self.progress = progress
        self.cancel = cancel
        self.on_update: TrainingProgressCallback | None = None  # storage, throttled
        self.epoch_metrics: list[dict[str, Any]] = []
        self._started = time.perf_counter()
        self._last_loss: float | None = None
        self._last_update = 0.0
        self._latest_metrics: dict[str, float] = {}

    def _snapshot(self, state: Any) -> TrainingProgress:
        elapsed = time.perf_counter() - self._started
        total = int(state.max_steps or 0)
        eta = elapsed / state.global_step * (total - state.global_step) if state.global_step and total else None
        return TrainingProgress(int(state.global_step), total, float(state.epoch or 0.0), self._last_loss, elapsed,
                                eta, dict(self._latest_metrics))

    def _emit(self, state: Any, force: bool = False) -> None:
        snapshot = self._snapshot(state)
        if self.progress is not None:
            self.progress(snapshot)
        now = time.perf_counter()
        if self.on_update is not None and (force or now - self._last_update >= UPDATE_INTERVAL_S):
            self._last_update = now
            self.on_update(snapshot)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()
        self._emit(state, force=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self._last_loss = float(logs["loss"])
        self._emit(state)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        self._latest_metrics = metrics
        entry = {"epoch": float(state.epoch or 0.0), "step": int(state.global_step), **metrics}
        if self._last_loss is not None:
            entry["train_loss"] = self._last_loss
        self.epoch_metrics.append(entry)
        self._emit(state, force=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            control.should_training_stop = True
            control.should_save = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._emit(state, force=True)
