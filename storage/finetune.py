"""The background fine-tuner's rows: confirmed examples per collection (bounded, oldest dropped) and
its state (idle/training/failed, counters, the metrics of each training).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.db import Database
from storage.tables import FineTuneExample, FineTuneState, utcnow


class FineTuneStore:
    """Confirmed examples and fine-tuner state per collection (see ``core.online``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add_example(self, collection: str, *, kind: str, input: str, workflow_id: str,
                    max_examples: int) -> list[str]:
        """Store one example, count it (seen + pending) and drop the oldest beyond ``max_examples``.

        Returns the inputs of the dropped examples (their image copies may be deleted). The
        counters are raised in SQL (``x = x + 1``) so two processes confirming at once both count.
        """
        with self.db.session() as session:
            self._ensure_state(session, collection)
            session.add(FineTuneExample(collection_name=collection, kind=kind, input=input, workflow_id=workflow_id))
            session.execute(FineTuneState.__table__.update()
                            .where(FineTuneState.collection_name == collection)
                            .values(examples_seen=FineTuneState.examples_seen + 1,
                                    pending=FineTuneState.pending + 1, updated_at=utcnow()))
            session.flush()
            doomed = list(session.execute(
                select(FineTuneExample.id, FineTuneExample.input)
                .where(FineTuneExample.collection_name == collection)
                .order_by(FineTuneExample.id.desc())
                .offset(max_examples)
            ))
            if doomed:
                session.execute(delete(FineTuneExample).where(FineTuneExample.id.in_([row.id for row in doomed])))
            return [row.input for row in doomed]

    def examples(self, collection: str) -> list[FineTuneExample]:
        """The kept examples, oldest first."""
        with self.db.session() as session:
            return list(session.scalars(select(FineTuneExample).where(FineTuneExample.collection_name == collection)
                                        .order_by(FineTuneExample.id)))

    def is_referenced(self, collection: str, input: str) -> bool:
        with self.db.session() as session:
            return bool(session.scalar(select(func.count()).select_from(FineTuneExample).where(
                FineTuneExample.collection_name == collection, FineTuneExample.input == input)))

    def state(self, collection: str) -> FineTuneState | None:
        with self.db.session() as session:
            return session.scalar(select(FineTuneState).where(FineTuneState.collection_name == collection))

    def states(self) -> list[FineTuneState]:
        with self.db.session() as session:
            return list(session.scalars(select(FineTuneState).order_by(FineTuneState.collection_name)))

    def update_state(self, collection: str, **fields: Any) -> FineTuneState:
        """Set fields of a collection's fine-tuner state (created on first use); returns the row."""
        with self.db.session() as session:
            state = self._ensure_state(session, collection)
            for key, value in fields.items():
                setattr(state, key, value)
            return state

    def increment(self, collection: str, **amounts: int) -> FineTuneState:
        """Add to counters in SQL (``attempts``, ``failures``...), then return the row."""
        with self.db.session() as session:
            self._ensure_state(session, collection)
            column = FineTuneState.__table__.c
            session.execute(FineTuneState.__table__.update()
                            .where(FineTuneState.collection_name == collection)
                            .values({column[name]: column[name] + amount for name, amount in amounts.items()}))
            return session.scalar(select(FineTuneState).where(FineTuneState.collection_name == collection)
                                  .execution_options(populate_existing=True))

    @staticmethod
    def _ensure_state(session: Session, collection: str) -> FineTuneState:
        state = session.scalar(select(FineTuneState).where(FineTuneState.collection_name == collection))
        if state is None:
            state = FineTuneState(collection_name=collection, state="idle", attempts=0, trainings_run=0, failures=0,
                                  examples_seen=0, pending=0, metrics_history=[])
            session.add(state)
            session.flush()
        return state
