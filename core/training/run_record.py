"""What a training process tells the database while it lives, so every other process can trust it.

``RunRecorder`` registers the process (pid, host, start time: a recycled pid is told apart),
writes each progress snapshot at most every ``WRITE_INTERVAL_S`` (every step when steps are
slower), and a heartbeat thread stamps the latest snapshot at least every ``HEARTBEAT_S`` even
while one step, the evaluation or the save takes minutes. A run whose heartbeat stops and whose
process is gone is then shown ``interrupted at step N`` (``core.training.runs.refresh_runs``).

``stop_on_signals`` turns SIGTERM and the first Ctrl-C into a cancel request: training stops at
the next step, saves a checkpoint, and the run ends ``cancelled at step N`` (a second Ctrl-C
interrupts at once, as usual). The token keeps the signal, so ``embtune train`` exits as a process
stopped by it would (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from core.progress import CancelToken
from core.training.callbacks import TrainingProgress

HEARTBEAT_S = 10.0
WRITE_INTERVAL_S = 5.0
HISTORY_POINTS = 500  # loss points kept in the run's progress for the studio's live curve


class RunRecorder:
    """Progress, heartbeat and process registration of one run, written through a ``RunStore``."""

    def __init__(self, runs: Any, run_name: str, *, heartbeat_s: float = HEARTBEAT_S,
                 write_interval_s: float = WRITE_INTERVAL_S) -> None:
        self.runs, self.run_name = runs, run_name
        self.heartbeat_s, self.write_interval_s = heartbeat_s, write_interval_s
        self._lock = threading.Lock()
        self._progress: dict[str, Any] = {}
        self._history: list[dict[str, float]] = []
        self._last_write = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register_process(self) -> None:
        """Record this process as the run's (the launcher registered the same pid already, or none did)."""
        from core.training.runs import process_start_time

        pid = os.getpid()
        self.runs.set_process(self.run_name, pid=pid, host=socket.gethostname(),
                              process_started=process_start_time(pid))

    def phase(self, name: str) -> None:
        """Name what the run is doing before or after its steps (loading, mining, evaluating, saving)."""
        with self._lock:
            self._progress["phase"] = name
        self._write(force=True)

    def record(self, snapshot: TrainingProgress) -> None:
        with self._lock:
            first_step = not self._progress.get("step") and snapshot.step > 0  # the page waits for this one
            # One point per logged loss, at the step it was logged: snapshots after every step repeat the
            # latest value, and drawing those would turn the curve into a staircase.
            if snapshot.loss is not None and snapshot.loss_step is not None and \
                    (not self._history or self._history[-1]["step"] != snapshot.loss_step):
                self._history.append({"step": snapshot.loss_step, "epoch": snapshot.epoch, "loss": snapshot.loss})
                if len(self._history) > HISTORY_POINTS:
                    del self._history[1::2]
            self._progress.update(snapshot.to_dict())
            self._progress["phase"] = "training"
        self._write(force=first_step)

    def start(self) -> RunRecorder:
        self._thread = threading.Thread(target=self._beat, name=f"embtune-heartbeat-{self.run_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s)
        self._write(force=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(Exception):  # a busy database must not kill training
                self._write(force=True)

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_write < self.write_interval_s:
                return
            self._last_write = now
            payload = {**self._progress, "history": list(self._history), "heartbeat_at": time.time()}
            self.runs.update(self.run_name, progress=payload)


@contextlib.contextmanager
def stop_on_signals(cancel: CancelToken) -> Iterator[CancelToken]:
    """SIGTERM and the first SIGINT cancel (checkpoint, then ``cancelled``); outside the main thread a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum: int, frame: Any) -> None:
        cancel.cancel(signal=signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield cancel
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
