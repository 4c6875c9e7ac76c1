"""Training runs and evaluations in the database: a run's row from queued to its end (status, config,
progress, the gate's figures), the process that runs it, and saved evaluations with per-query results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, select, update

from core.errors import StorageError
from storage.db import Database
from storage.tables import EvaluationRecord, QueryResult, RunProcess, TrainingRun, utcnow

# Statuses after which a run does not change by itself (the names are core.training.runs'; storage only
# needs to know when to stamp finished_at).
ENDED_STATUSES = ("done", "finished", "not proven", "rejected", "failed", "cancelled", "interrupted")


class RunStore:
    """Training runs in the database: created at start, updated as they progress, read by UIs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, name: str, *, takeover: bool = False, replace: bool = False, **fields: Any) -> None:
        """Mark run ``name`` running with ``fields``. A name already taken is refused, unless the row is this
        run's own (``takeover``: queued by the launcher, or the run being resumed, which keeps its row) or
        ``replace`` forgets the earlier run first: its row, process and evaluations (``--overwrite``)."""
        with self.db.session() as session:
            run = session.scalar(select(TrainingRun).where(TrainingRun.name == name))
            if run is not None and replace and not takeover:
                session.execute(delete(RunProcess).where(RunProcess.run_name == name))
                session.execute(delete(EvaluationRecord).where(EvaluationRecord.run_name == name))
                session.delete(run)
                session.flush()
                run = None
            if run is None:
                session.add(TrainingRun(name=name, status="running", started_at=utcnow(), **fields))
            elif takeover:  # queued by the launcher (the studio), or resumed: the run keeps its row
                for key, value in fields.items():
                    setattr(run, key, value)
                # a cancel asked for while the run was queued stays visible until the worker acts on it
                run.status = "cancelling" if run.status == "cancelling" else "running"
                run.error, run.finished_at = None, None
                run.started_at = run.started_at or utcnow()
            else:
                raise StorageError(f"a training run named {name!r} already exists ({run.status}): choose another "
                                   "name, or replace it with --overwrite")

    def update(self, name: str, **fields: Any) -> None:
        if fields.get("status") in ENDED_STATUSES:
            fields.setdefault("finished_at", utcnow())
        with self.db.session() as session:
            run = session.scalar(select(TrainingRun).where(TrainingRun.name == name))
            if run is None:
                raise StorageError(f"training run {name!r} does not exist")
            for key, value in fields.items():
                setattr(run, key, value)

    def get(self, name: str) -> TrainingRun | None:
        with self.db.session() as session:
            return session.scalar(select(TrainingRun).where(TrainingRun.name == name))

    def list(self, collection_name: str | None = None) -> list[TrainingRun]:
        with self.db.session() as session:
            query = select(TrainingRun).order_by(TrainingRun.created_at.desc())
            if collection_name is not None:
                query = query.where(TrainingRun.collection_name == collection_name)
            return list(session.scalars(query))

    def queue(self, name: str, *, collection_name: str | None, config: Mapping[str, Any]) -> None:
        """A run launched but not started yet; refused when the name is taken."""
        with self.db.session() as session:
            if session.scalar(select(TrainingRun).where(TrainingRun.name == name)) is not None:
                raise StorageError(f"a training run named {name!r} already exists: choose another name")
            session.add(TrainingRun(name=name, status="queued", collection_name=collection_name, config=dict(config),
                                    progress={}, epoch_metrics=[], before_after={}))

    def set_process(self, name: str, **fields: Any) -> None:
        """Record (or update) the process training ``name``: pid, host, start time, log file."""
        with self.db.session() as session:
            process = session.scalar(select(RunProcess).where(RunProcess.run_name == name))
            if process is None:
                session.add(RunProcess(run_name=name, **fields))
            else:
                for key, value in fields.items():
                    setattr(process, key, value)

    def process(self, name: str) -> RunProcess | None:
        with self.db.session() as session:
            return session.scalar(select(RunProcess).where(RunProcess.run_name == name))

    def request_cancel(self, name: str) -> bool:
        """Flag the run's process to stop and mark a queued or running run ``cancelling`` in one transaction;
        False when the run had already ended (nothing to cancel)."""
        with self.db.session() as session:
            changed = session.execute(update(TrainingRun).where(TrainingRun.name == name,
                                                                TrainingRun.status.in_(("queued", "running")))
                                      .values(status="cancelling")).rowcount
            process = session.scalar(select(RunProcess).where(RunProcess.run_name == name))
            if process is None:
                session.add(RunProcess(run_name=name, cancel_requested=1))
            else:
                process.cancel_requested = 1
            return bool(changed)

    def delete(self, name: str) -> None:
        """Forget a run (not its model folder): used when a launch fails before any process starts."""
        with self.db.session() as session:
            session.execute(delete(RunProcess).where(RunProcess.run_name == name))
            session.execute(delete(TrainingRun).where(TrainingRun.name == name))

    def save_evaluation(self, *, model_spec: str, model_fingerprint: str, data_source: str,
                        metrics: Mapping[str, float], per_query: Iterable[Mapping[str, Any]],
                        run_name: str | None = None) -> int:
        """One evaluation with its per-query values (the rows paired comparisons are built on)."""
        with self.db.session() as session:
            record = EvaluationRecord(run_name=run_name, model_spec=model_spec, model_fingerprint=model_fingerprint,
                                      data_source=data_source, metrics=dict(metrics))
            session.add(record)
            session.flush()
            rows = [{"evaluation_id": record.id, **row} for row in per_query]
            if rows:
                session.execute(QueryResult.__table__.insert(), rows)
            return record.id
