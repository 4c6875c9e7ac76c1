"""Training launched from a UI: one operating-system process per run, tracked in storage.

A fine-tune takes minutes to hours; it must not live inside a Streamlit script run (a rerun,
a reload or a studio restart would kill or orphan it). ``launch_training`` checks the data
and loss first (a user mistake is refused before anything starts), records the run as
``queued`` with its config, and starts ``python -m core.training.worker`` detached from the
caller. Everything after that goes through the database: the worker writes progress, the
page reads it; ``cancel_training`` sets a flag the worker polls; ``refresh_runs`` marks a run
``failed`` when its process is gone without finishing (killed, crashed, machine rebooted).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError
from core.training.config import TrainingConfig

ACTIVE_STATES = ("queued", "running")
FINISHED_STATES = ("done", "failed", "cancelled")
LOG_TAIL_LINES = 5
# A queued run whose process never registered (the launch itself died) is failed after this long.
QUEUED_TIMEOUT_S = 120.0


def new_run_name() -> str:
    """A run name no earlier run has (time-stamped, with a short random tail for two launches a second)."""
    import secrets

    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def inspect_training_data(source: str, *, db: Any, corpus: str | None = None, corpus_text_column: str = "text",
                          data_format: str = "auto") -> dict[str, Any]:
    """What a training source holds, before a run is configured: format, usable rows, the losses
    that fit it (the first is the default), validation warnings. Raises for unusable data."""
    from core.data.training_data import load_training_data
    from core.training.losses import LOSSES_BY_FORMAT

    data = load_training_data(source, data_format=data_format, corpus=corpus, corpus_text_column=corpus_text_column,
                              db=db)
    return {"data_format": data.data_format, "rows": data.report.rows, "losses": list(LOSSES_BY_FORMAT[
        data.data_format]), "counts": dict(data.report.counts), "warnings": list(data.report.warnings)}


def check_launch(config: TrainingConfig, db: Any) -> dict[str, Any]:
    """Refuse a run that cannot train before a process is started: too few pairs, a loss that does
    not fit the data, a base-model folder that does not exist."""
    from core.training.losses import choose_loss

    found = inspect_training_data(config.data, db=db, corpus=config.corpus,
                                  corpus_text_column=config.corpus_text_column, data_format=config.data_format)
    found["loss"] = choose_loss(config.loss, found["data_format"])
    model = Path(config.model).expanduser()
    if config.model != "default" and (config.model.startswith((".", "/", "~")) or model.is_absolute()) \
            and not model.exists():
        raise EmbtuneError(f"base model folder {config.model} does not exist")
    return found


def launch_training(config: TrainingConfig, *, db: Any, workspace: Any, python: str | None = None,
                    env: dict[str, str] | None = None) -> str:
    """Validate, queue and start a run in its own process; returns the run name."""
    name = config.run_name or new_run_name()
    output_dir = config.output_dir or str(workspace.models_dir / name)
    config = replace(config, run_name=name, output_dir=output_dir)
    if Path(output_dir).exists() and not config.overwrite and not config.resume:
        raise EmbtuneError(f"output folder {output_dir} already exists: choose another run name")
    check_launch(config, db)
    from storage.db import RunStore

    runs = RunStore(db)
    runs.queue(name, collection_name=config.collection, config=config.to_dict())
    log_path = workspace.runs_dir / f"{name}.log"
    try:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [python or sys.executable, "-m", "core.training.worker", "--db", db.url, "--run", name],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=str(Path.cwd()), env={**os.environ, **(env or {}), "EMBTUNE_HOME": str(workspace.root)},
            )
    except OSError as exc:
        runs.delete(name)
        raise EmbtuneError(f"could not start the training process: {exc}") from exc
    runs.set_process(name, pid=process.pid, host=socket.gethostname(), process_started=_start_time(process.pid),
                     log_path=str(log_path))
    return name


def cancel_training(name: str, db: Any) -> None:
    """Ask a queued or running run to stop; the worker stops at the next step and saves a checkpoint."""
    from storage.db import RunStore

    runs = RunStore(db)
    run = runs.get(name)
    if run is None:
        raise EmbtuneError(f"training run {name!r} does not exist")
    if run.status not in ACTIVE_STATES:
        raise EmbtuneError(f"training run {name!r} is {run.status}; only queued or running runs can be cancelled")
    runs.request_cancel(name)


def refresh_runs(db: Any, *, now: float | None = None) -> list[Any]:
    """All runs, newest first, after marking as failed those whose process has gone."""
    from storage.db import RunStore

    runs = RunStore(db)
    listed = runs.list()
    host = socket.gethostname()
    now = time.time() if now is None else now
    for run in listed:
        if run.status not in ACTIVE_STATES:
            continue
        process = runs.process(run.name)
        if process is None or process.pid is None:
            created = run.created_at.timestamp() if run.created_at else now
            if now - created > QUEUED_TIMEOUT_S:
                runs.update(run.name, status="failed", error="the training process never started")
            continue
        if process.host != host or process_alive(process.pid, process.process_started):
            continue
        runs.update(run.name, status="failed",
                    error=f"the training process (pid {process.pid}) ended without finishing"
                          + _log_tail(process.log_path))
    return runs.list()


def process_alive(pid: int, started: float | None) -> bool:
    """True while ``pid`` is the process we started (a recycled pid has another start time)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        return started is None or abs(process.create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def run_duration_s(run: Any) -> float | None:
    if run.started_at is None:
        return None
    end = run.finished_at or _now_like(run.started_at)
    return max(0.0, (end - run.started_at).total_seconds())


def _now_like(moment: Any) -> Any:
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    return now if moment.tzinfo is not None else now.replace(tzinfo=None)


def _reap(pid: int) -> None:
    # Our own child that exited stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _log_tail(log_path: str | None) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    lines = [line.strip() for line in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()]
    return ("; last log lines: " + " | ".join(lines[-LOG_TAIL_LINES:])) if lines else ""
