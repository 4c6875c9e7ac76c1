"""Training progress for the console, the studio and tests, and cancel from another thread.

``ProgressBridge`` is a Hugging Face ``TrainerCallback``: it turns the trainer's logs into
``TrainingProgress`` snapshots (step, epoch, loss, eval metrics, ETA), keeps per-epoch
metrics, says at which step the loss it carries was logged (a chart draws a point there and
nowhere else), and stops training at the next step once the cancel token is set (the trainer
then saves a checkpoint, so the run can be resumed). Snapshots go out after every step, not
only when the trainer logs, so a step count moves from the first step. ``CheckpointTimer``
saves a checkpoint whenever ``every_s`` of training passed since the last one, so a killed run
loses at most that much, however long its epochs are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import TrainerCallback

from core.progress import CancelToken, format_duration

CONSOLE_INTERVAL_S = 5.0


@dataclass
class TrainingProgress:
    step: int
    total_steps: int
    epoch: float
    loss: float | None
    elapsed_s: float
    eta_s: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    loss_step: int | None = None
    """The step at which ``loss`` was logged: the trainer logs every ``log_every`` steps, and a snapshot after
    every step carries the latest logged value."""
    log_every: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One log line: step n/N, epoch, loss, elapsed and ETA."""
        parts = [f"step {self.step}/{self.total_steps or '?'}", f"epoch {self.epoch:.2f}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        parts.append(f"{format_duration(self.elapsed_s)} elapsed")
        parts.append(f"ETA {format_duration(self.eta_s)}")
        return " · ".join(parts)


def console_progress(write: Callable[[str], None], *, interval_s: float = CONSOLE_INTERVAL_S
                     ) -> Callable[[TrainingProgress], None]:
    """A progress callback printing a line per step, or every ``interval_s`` when steps are faster, and
    the last step always (for logs and pipes, where a progress bar prints nothing useful)."""
    last: dict[str, float] = {"at": -interval_s, "step": -1.0}

    def report(snapshot: TrainingProgress) -> None:
        now = time.monotonic()
        final = bool(snapshot.total_steps) and snapshot.step >= snapshot.total_steps
        if snapshot.step != last["step"] and (now - last["at"] >= interval_s or final):
            last["at"], last["step"] = now, float(snapshot.step)
            write(snapshot.line())

    return report


TrainingProgressCallback = Callable[[TrainingProgress], None]


class ProgressBridge(TrainerCallback):
    def __init__(self, progress: TrainingProgressCallback | None = None, cancel: CancelToken | None = None) -> None:
        self.progress = progress
        self.cancel = cancel
        self.on_update: TrainingProgressCallback | None = None  # storage (it throttles its own writes)
        self.epoch_metrics: list[dict[str, Any]] = []
        self._started = time.perf_counter()
        self._last_loss: float | None = None
        self._loss_step: int | None = None
        self._log_every: int | None = None
        self._first_step = 0
        self._latest_metrics: dict[str, float] = {}

    def _snapshot(self, state: Any) -> TrainingProgress:
        elapsed = time.perf_counter() - self._started
        total = int(state.max_steps or 0)
        done = int(state.global_step) - self._first_step  # a resumed run's ETA counts only this session's steps
        eta = elapsed / done * (total - state.global_step) if done > 0 and total else None
        return TrainingProgress(int(state.global_step), total, float(state.epoch or 0.0), self._last_loss, elapsed,
                                eta, dict(self._latest_metrics), self._loss_step, self._log_every)

    def _emit(self, state: Any) -> None:
        snapshot = self._snapshot(state)
        if self.progress is not None:
            self.progress(snapshot)
        if self.on_update is not None:
            self.on_update(snapshot)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()
        self._first_step = int(state.global_step)
        self._log_every = int(getattr(args, "logging_steps", 0) or 0) or None
        self._emit(state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self._last_loss = float(logs["loss"])
            self._loss_step = int(state.global_step)
        self._emit(state)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        self._latest_metrics = metrics
        entry = {"epoch": float(state.epoch or 0.0), "step": int(state.global_step), **metrics}
        if self._last_loss is not None:
            entry["train_loss"] = self._last_loss
        self.epoch_metrics.append(entry)
        self._emit(state)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            control.should_training_stop = True
            control.should_save = True
        self._emit(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._emit(state)


class CheckpointTimer(TrainerCallback):
    """Ask for a checkpoint once ``every_s`` seconds of training passed since the last one."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if time.monotonic() - self._last >= self.every_s:
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = time.monotonic()
