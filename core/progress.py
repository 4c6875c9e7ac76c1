"""Progress reporting and cancellation for long operations.

Every long operation in ``core`` (encoding a corpus, building an index, training) takes an
optional ``progress`` callback and an optional ``cancel`` token. The CLI turns progress into
a console bar; the studio stores it where its page can poll it; a test can record it. The
operation checks the token between units of work, so cancelling from another thread stops
it at the next unit with ``CancelledError`` and nothing half-written.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from core.errors import CancelledError


@dataclass(frozen=True)
class Progress:
    """A snapshot of a long operation: ``done`` of ``total`` units of ``task``."""

    task: str
    done: int
    total: int | None
    elapsed_s: float
    message: str = ""

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    @property
    def eta_s(self) -> float | None:
        if not self.total or self.done <= 0:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)


ProgressCallback = Callable[[Progress], None]


@dataclass
class CancelToken:
    """Set from any thread; long operations poll it between units of work."""

    _event: threading.Event = field(default_factory=threading.Event)
    signal: int | None = None
    """The signal that asked for the cancel (SIGTERM, SIGINT), if one did: a command exits 128 + it."""

    def cancel(self, signal: int | None = None) -> None:
        if signal is not None and self.signal is None:
            self.signal = signal
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self, task: str) -> None:
        if self._event.is_set():
            raise CancelledError(f"{task} was cancelled")


class ProgressReporter:
    """Drives a console bar (when wanted) and the caller's callback from one place."""

    def __init__(
        self,
        task: str,
        total: int | None,
        *,
        callback: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        show_bar: bool = False,
        unit: str = "it",
    ) -> None:
        self.task = task
        self.total = total
        self.done = 0
        self._callback = callback
        self._cancel = cancel
        self._started = time.perf_counter()
        self._bar = tqdm(total=total, desc=task, unit=unit, file=sys.stderr, leave=False) if show_bar else None

    def check_cancelled(self) -> None:
        if self._cancel is not None:
            self._cancel.raise_if_cancelled(self.task)

    def advance(self, units: int, message: str = "") -> None:
        self.done += units
        if self._bar is not None:
            self._bar.update(units)
        if self._callback is not None:
            self._callback(Progress(self.task, self.done, self.total, time.perf_counter() - self._started, message))
        self.check_cancelled()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ProgressReporter:
        self.check_cancelled()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def format_duration(seconds: float | None) -> str:
    """One way to write a duration everywhere (logs, the CLI, the studio): "42 s", "6 min 05 s", "1 h 03 min",
    or "–" when it is unknown."""
    if seconds is None:
        return "–"
    seconds = round(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_lines(write: Callable[[str], None], *, interval_s: float = 5.0) -> ProgressCallback:
    """A progress callback writing "task: n/N (p %), ETA" at most every ``interval_s`` and at the end:
    for logs and pipes, where a console bar shows nothing."""
    last = {"at": -interval_s}

    def report(progress: Progress) -> None:
        now = time.monotonic()
        finished = progress.total is not None and progress.done >= progress.total
        if now - last["at"] < interval_s and not finished:
            return
        last["at"] = now
        share = f" ({progress.fraction * 100:.0f} %)" if progress.fraction is not None else ""
        eta = f", ETA {format_duration(progress.eta_s)}" if progress.eta_s is not None and not finished else ""
        write(f"{progress.task}: {progress.done}/{progress.total or '?'}{share}{eta}")

    return report
