"""Training runs as users see them: their states, which run a name picks, and runs whose process died.

Stored statuses are short words (``queued``, ``running``, ``cancelling``, ``finished``, ``not proven``,
``rejected``, ``cancelled``, ``interrupted``, ``failed``); what a person reads adds the step or
the reason ("interrupted at step 8", "finished (not proven)", "rejected: forgetting …"). Runs
recorded before the gate existed say ``done``: their stored before/after comparisons still carry
the paired verdict, so they are classified by the same gate rather than trusted blindly.

This module is the one place that resolves ``run:NAME`` and ``run:latest`` and that picks the run
the demos and the studio serve by default: the newest *finished* (better) run, else the newest
*not proven* one (labelled so); a *rejected* run only when a user names it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import time
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError
from core.training.gate import FINISHED, NOT_PROVEN, REJECTED, GateDecision, decide

QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
CANCELLED, INTERRUPTED, FAILED = "cancelled", "interrupted", "failed"
LEGACY_DONE = "done"
ACTIVE_STATES = (QUEUED, RUNNING, CANCELLING)
ENDED_STATES = (FINISHED, NOT_PROVEN, REJECTED, CANCELLED, INTERRUPTED, FAILED, LEGACY_DONE)
WITH_MODEL = (FINISHED, NOT_PROVEN, REJECTED)
HEARTBEAT_STALE_S = 30.0
"""A running run whose last heartbeat is older than this, and whose process is not seen alive, is interrupted."""
QUEUED_TIMEOUT_S = 120.0
"""A queued run whose process never registered (the launch itself died) is failed after this long."""
LOG_TAIL_LINES = 5


def gate_of(run: Any) -> GateDecision | None:
    """The run's gate decision: stored by runs since the gate exists, re-derived for older ``done`` runs."""
    before_after = run.before_after or {}
    if before_after.get("gate"):
        return GateDecision.from_dict(before_after["gate"])
    if run.status != LEGACY_DONE:
        return None
    metric = str((run.config or {}).get("metric_for_best") or "auto")
    comparisons = before_after.get("comparisons") or []
    if metric == "auto" and comparisons:
        smallest = min(int(c["dimension"]) for c in comparisons)
        metric = f"dim_{smallest}_ndcg@10"
    primary = next((c for c in comparisons if f"dim_{c['dimension']}_{c['metric']}" == metric), None)
    return decide(primary, metric=metric)


def effective_status(run: Any) -> str:
    """The stored status, with a legacy ``done`` replaced by what the gate makes of its figures."""
    if run.status == LEGACY_DONE:
        gate = gate_of(run)
        return gate.status if gate is not None else NOT_PROVEN
    return run.status


def run_step(run: Any) -> int:
    return int((run.progress or {}).get("step") or 0)


def state_label(run: Any) -> str:
    """What a person reads: "interrupted at step 8", "finished (not proven)", "rejected: …"."""
    status = effective_status(run)
    if status in (CANCELLED, INTERRUPTED):
        return f"{status} at step {run_step(run)}"
    if status == CANCELLING:
        return f"cancelling… (stops after step {run_step(run) + 1}, then saves a checkpoint)"
    if status == FAILED:
        return f"failed: {run.error}" if run.error else "failed"
    if status == NOT_PROVEN:
        return "finished (not proven)"
    if status == REJECTED:
        gate = gate_of(run)
        return f"rejected: {gate.reason}" if gate is not None else "rejected"
    gate = gate_of(run)
    if status == FINISHED and gate is not None and gate.accepted_worse:
        return "finished (worse accepted)"
    return status


def run_summary(run: Any) -> dict[str, Any]:
    """One run as a plain row (``embtune runs``, the studio's table, ``--json``)."""
    gate = gate_of(run)
    return {
        "name": run.name, "collection": run.collection_name, "status": effective_status(run),
        "state": state_label(run), "step": run_step(run),
        "total_steps": int((run.progress or {}).get("total_steps") or 0),
        "duration_s": run_duration_s(run), "verdict": gate.verdict if gate else None,
        "metric": gate.metric if gate else None, "delta": gate.delta if gate else None,
        "forgetting_delta": (gate.forgetting or {}).get("delta") if gate else None,
        "model_path": run.model_path,
        "started_at": run.started_at.isoformat() if run.started_at else None,
    }


# -- which run a name picks ---------------------------------------------------------------------


def newest_servable_run(db: Any, collection: str | None = None) -> Any | None:
    """The newest *finished* run with a model (for the collection when given), else the newest *not
    proven* one; never a rejected, failed, cancelled or interrupted run."""
    from storage.runs import RunStore

    runs = [run for run in RunStore(db).list(collection) if run.model_path]  # newest first
    for wanted in (FINISHED, NOT_PROVEN):
        for run in runs:
            if effective_status(run) == wanted:
                return run
    return None


def resolve_run(spec: str, db: Any, *, collection: str | None = None) -> Any:
    """``run:NAME``, ``NAME`` or ``run:latest`` → the run record with a model, or one clear error."""
    if db is None:
        raise EmbtuneError(f"{spec}: runs are looked up in the database, and none was given")
    name = spec[4:] if spec.startswith("run:") else spec
    if name == "latest":
        run = newest_servable_run(db, collection)
        if run is None:
            where = f" for collection {collection!r}" if collection else ""
            raise EmbtuneError(f"run:latest: no finished training run{where} (rejected runs are only used by name)")
        return run
    from storage.runs import RunStore

    run = RunStore(db).get(name)
    if run is None:
        raise EmbtuneError(f"run:{name}: no training run named {name!r} (embtune runs lists them)")
    status = effective_status(run)
    if status not in WITH_MODEL or not run.model_path:
        raise EmbtuneError(f"run:{name} is {state_label(run)}: it has no model to use")
    return run


def resolve_model_spec(spec: str, db: Any = None, *, collection: str | None = None) -> str:
    """``run:NAME`` / ``run:latest`` → that run's model folder; any other spec unchanged."""
    if not spec.startswith("run:"):
        return spec
    return str(resolve_run(spec, db, collection=collection).model_path)


def run_of_model(spec: str, db: Any) -> Any | None:
    """The run whose model a spec names — ``run:NAME``, ``run:latest`` or the run's model folder — or None
    (a bundled or hub model, or no database)."""
    if db is None:
        return None
    if spec.startswith("run:"):
        return resolve_run(spec, db)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        return None
    from storage.runs import RunStore

    folder = folder.resolve()
    return next((run for run in RunStore(db).list() if run.model_path and Path(run.model_path).resolve() == folder),
                None)


def servable_specs(db: Any, collection: str | None = None) -> list[str]:
    """``run:NAME`` of every finished or not-proven run with a model, newest first (a UI's choices)."""
    from storage.runs import RunStore

    return [f"run:{run.name}" for run in RunStore(db).list(collection)
            if run.model_path and effective_status(run) in (FINISHED, NOT_PROVEN)]


def servable_spec(collection: str, db: Any) -> str | None:
    """``run:NAME`` of the run the demos serve as model B for ``collection``, or None."""
    run = newest_servable_run(db, collection)
    return f"run:{run.name}" if run is not None else None


# -- runs whose process is gone ---------------------------------------------------------------


def refresh_runs(db: Any, *, now: float | None = None) -> list[Any]:
    """All runs, newest first, after ending those whose process has gone.

    A run that had started becomes ``interrupted`` (at its last recorded step); a queued run whose
    process never registered becomes ``failed`` with that reason. A process on this host is asked
    directly; one elsewhere is judged by its heartbeat.
    """
    from storage.runs import RunStore

    runs = RunStore(db)
    host = socket.gethostname()
    now = time.time() if now is None else now
    for run in runs.list():
        if run.status not in ACTIVE_STATES:
            continue
        process = runs.process(run.name)
        heartbeat = float((run.progress or {}).get("heartbeat_at") or 0.0)
        if process is None or process.pid is None:
            if heartbeat and now - heartbeat > HEARTBEAT_STALE_S:
                runs.update(run.name, status=INTERRUPTED, error="no heartbeat for "
                            f"{now - heartbeat:.0f} s and no live process")
            elif not heartbeat and run.status == QUEUED and now - _timestamp(run.created_at, now) > QUEUED_TIMEOUT_S:
                runs.update(run.name, status=FAILED, error="the training process never started")
            continue
        if process.host == host:
            if process_alive(process.pid, process.process_started):
                continue
        elif not heartbeat or now - heartbeat <= HEARTBEAT_STALE_S:
            continue
        if run.status == RUNNING or heartbeat:
            runs.update(run.name, status=INTERRUPTED, error=f"the training process (pid {process.pid}) ended "
                        f"without finishing{_log_tail(process.log_path)}")
        else:
            runs.update(run.name, status=FAILED, error=f"the training process (pid {process.pid}) ended before "
                        f"training started{_log_tail(process.log_path)}")
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


def process_start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def run_duration_s(run: Any) -> float | None:
    """Seconds from start to end (or to now while it runs): live from the first step."""
    if run.started_at is None:
        return None
    end = run.finished_at
    if end is None and run.status not in ACTIVE_STATES:
        heartbeat = (run.progress or {}).get("heartbeat_at")
        end = dt.datetime.fromtimestamp(float(heartbeat), dt.timezone.utc) if heartbeat else run.started_at
    end = end or dt.datetime.now(dt.timezone.utc)
    start = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=dt.timezone.utc)
    end = end if end.tzinfo else end.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (end - start).total_seconds())


def _timestamp(moment: dt.datetime | None, default: float) -> float:
    if moment is None:
        return default
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()


def _reap(pid: int) -> None:
    # Our own child that exited stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _log_tail(log_path: str | None) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    lines = [line.strip() for line in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()]
    return ("; last log lines: " + " | ".join(lines[-LOG_TAIL_LINES:])) if lines else ""
