"""SQLAlchemy persistence: collections, items, labelled pairs, training runs, evaluations.

SQLite inside the workspace is the default so nothing needs setting up; any SQLAlchemy URL
works (PostgreSQL is tested for real), so the SQL stays portable: JSON columns, no
dialect-specific types, timestamps in UTC. The studio, the CLI and background training
processes all read and write the same rows, which is why state that matters lives here and
not in a UI session.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from core.errors import StorageError

# Items per INSERT statement when a collection is saved (bounds the rows held in memory at once).
ITEM_INSERT_CHUNK = 5_000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class CollectionRecord(Base):
    """A searchable collection; its FAISS index and metadata live in the folder at ``path``."""

    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    model_spec: Mapped[str] = mapped_column(String(500))
    model_fingerprint: Mapped[str] = mapped_column(String(64))
    dimension: Mapped[int] = mapped_column(Integer)
    index_kind: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    items: Mapped[list[ItemRecord]] = relationship(back_populates="collection", cascade="all, delete-orphan",
                                                   passive_deletes=True)


class ItemRecord(Base):
    """One searchable thing: its text and/or image path and its metadata (JSON)."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("collection_id", "item_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    item_key: Mapped[str] = mapped_column(String(500))
    text: Mapped[str | None] = mapped_column(Text, default=None)
    image_path: Mapped[str | None] = mapped_column(Text, default=None)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    collection: Mapped[CollectionRecord] = relationship(back_populates="items")


class LabelledPair(Base):
    """A human judgement: how relevant ``item_key`` is to ``query`` (0..1), by whom and when."""

    __tablename__ = "labelled_pairs"
    __table_args__ = (CheckConstraint("score >= 0 AND score <= 1", name="score_in_unit_range"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_name: Mapped[str | None] = mapped_column(String(200), index=True, default=None)
    query: Mapped[str] = mapped_column(Text)
    item_key: Mapped[str] = mapped_column(String(500))
    item_text: Mapped[str | None] = mapped_column(Text, default=None)
    score: Mapped[float] = mapped_column(Float)
    annotator: Mapped[str] = mapped_column(String(200), default="anonymous")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LabelQuery(Base):
    """A query waiting to be labelled for a collection: the "next unlabelled" list of the Label page."""

    __tablename__ = "label_queries"
    __table_args__ = (UniqueConstraint("collection_name", "query"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_name: Mapped[str] = mapped_column(String(200), index=True)
    query: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    """A fine-tuning run: its config, data fingerprint, progress, metrics and output model."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    collection_name: Mapped[str | None] = mapped_column(String(200), index=True, default=None)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    epoch_metrics: Mapped[list[Any]] = mapped_column(JSON, default=list)
    before_after: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_path: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class RunProcess(Base):
    """The operating-system process training a run, so another process (the studio) can tell a run
    that is still working from one whose process died, and can ask it to stop."""

    __tablename__ = "run_processes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_name: Mapped[str] = mapped_column(String(200), unique=True)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    host: Mapped[str | None] = mapped_column(String(200), default=None)
    process_started: Mapped[float | None] = mapped_column(Float, default=None)
    """The process's start time (seconds since the epoch): a recycled pid has another one."""
    log_path: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[int] = mapped_column(Integer, default=0)


class EvaluationRecord(Base):
    """One model evaluated on one data set: mean metrics; per-query values in the child table."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_name: Mapped[str | None] = mapped_column(String(200), index=True, default=None)
    model_spec: Mapped[str] = mapped_column(String(500))
    model_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    data_source: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    query_results: Mapped[list[QueryResult]] = relationship(back_populates="evaluation",
                                                            cascade="all, delete-orphan", passive_deletes=True)


class QueryResult(Base):
    """One metric value for one query at one dimension: what paired comparisons are built on."""

    __tablename__ = "evaluation_query_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    query_id: Mapped[str] = mapped_column(String(500))
    dimension: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)

    evaluation: Mapped[EvaluationRecord] = relationship(back_populates="query_results")


class FineTuneExample(Base):
    """One confirmed (input, workflow) example for a collection's background fine-tuner.

    ``input`` is the text itself for text models, or the path of the image (a copy kept in
    the workspace) for image models; ``kind`` says which.
    """

    __tablename__ = "finetune_examples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_name: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    input: Mapped[str] = mapped_column(Text)
    workflow_id: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FineTuneState(Base):
    """A collection's background fine-tuner: counters, state, last error and per-training metrics.

    Kept in the database (not in memory) so a restart, the CLI and the studio see the same
    numbers; ``attempts`` numbers the checkpoint folders, so one is never written twice.
    """

    __tablename__ = "finetune_states"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_name: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="idle")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    trainings_run: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    examples_seen: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[int] = mapped_column(Integer, default=0)
    last_loss: Mapped[float | None] = mapped_column(Float, default=None)
    current_checkpoint: Mapped[str | None] = mapped_column(Text, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    metrics_history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


def display_url(url: str) -> str:
    """The URL with any password masked, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


class Database:
    """One engine + session factory for a URL; creates the schema on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ModuleNotFoundError, ValueError) as exc:
            raise StorageError(f"database URL {display_url(url)!r} is not usable: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            try:
                Base.metadata.create_all(self.engine)
            except SQLAlchemyError:
                # Two processes (e.g. torchrun ranks) creating the schema at once: the loser retries.
                time.sleep(0.5)
                Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StorageError(f"cannot connect to database {display_url(url)}: {reason}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StorageError(f"cannot connect to database {display_url(self.url)}: {reason}") from exc

    # -- collections -------------------------------------------------------------------

    def save_collection(self, fields: Mapping[str, Any], items: Iterable[Mapping[str, Any]]) -> CollectionRecord:
        """Create or replace a collection row and all its items in one transaction."""
        with self.session() as session:
            record = session.scalar(select(CollectionRecord).where(CollectionRecord.name == fields["name"]))
            if record is None:
                record = CollectionRecord(**fields)
                session.add(record)
                session.flush()
            else:
                for key, value in fields.items():
                    setattr(record, key, value)
                session.execute(delete(ItemRecord).where(ItemRecord.collection_id == record.id))
            # Inserted in chunks within the one transaction: a collection of millions of items (a Ray-built
            # one streams them from its parts) never has all its rows in memory at once.
            rows = iter(items)
            while chunk := [
                {
                    "collection_id": record.id,
                    "item_key": item["item_key"],
                    "text": item.get("text"),
                    "image_path": item.get("image_path"),
                    "metadata_json": dict(item.get("metadata_json") or {}),
                }
                for item in itertools.islice(rows, ITEM_INSERT_CHUNK)
            ]:
                session.execute(ItemRecord.__table__.insert(), chunk)
            record.item_count = session.scalar(
                select(func.count()).select_from(ItemRecord).where(ItemRecord.collection_id == record.id)
            ) or 0
            return record

    def list_collections(self) -> list[CollectionRecord]:
        with self.session() as session:
            return list(session.scalars(select(CollectionRecord).order_by(CollectionRecord.name)))

    def get_collection(self, name: str) -> CollectionRecord | None:
        with self.session() as session:
            return session.scalar(select(CollectionRecord).where(CollectionRecord.name == name))

    def delete_collection(self, name: str) -> bool:
        with self.session() as session:
            record = session.scalar(select(CollectionRecord).where(CollectionRecord.name == name))
            if record is None:
                return False
            session.execute(delete(ItemRecord).where(ItemRecord.collection_id == record.id))
            session.delete(record)
            return True

    def collection_items(self, name: str) -> list[ItemRecord]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(ItemRecord)
                    .join(CollectionRecord)
                    .where(CollectionRecord.name == name)
                    .order_by(ItemRecord.id)
                )
            )

    def update_collection(self, name: str, **fields: Any) -> None:
        """Change a collection row's fields (model, path...) in one transaction, items untouched.

        The background fine-tuner swaps a collection to a new model + index with one call:
        another process reads either the old pair or the new one, never a mix.
        """
        with self.session() as session:
            record = session.scalar(select(CollectionRecord).where(CollectionRecord.name == name))
            if record is None:
                raise StorageError(f"collection {name!r} does not exist")
            for key, value in fields.items():
                setattr(record, key, value)

    # -- labels ---------------------------------------------------------------------------

    def add_labels(self, labels: Iterable[Mapping[str, Any]]) -> int:
        rows = [dict(label) for label in labels]
        for row in rows:
            score = row.get("score")
            if not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
                raise StorageError(f"label for query {row.get('query')!r}: score {score!r} is outside 0..1")
        with self.session() as session:
            session.add_all(LabelledPair(**row) for row in rows)
        return len(rows)

    def add_label(self, **fields: Any) -> int:
        """Save one label at once (the Label page's buttons) and return its id, for undo."""
        score = fields.get("score")
        if not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
            raise StorageError(f"label for query {fields.get('query')!r}: score {score!r} is outside 0..1")
        with self.session() as session:
            label = LabelledPair(**fields)
            session.add(label)
            session.flush()
            return label.id

    def delete_label(self, label_id: int) -> bool:
        """Undo one label (the Label page's "undo"); False when it was already gone."""
        with self.session() as session:
            return bool(session.execute(delete(LabelledPair).where(LabelledPair.id == label_id)).rowcount)

    def add_label_queries(self, collection_name: str, queries: Iterable[str], source: str | None = None) -> int:
        """Queue queries for labelling; ones already queued for the collection are not added twice."""
        with self.session() as session:
            known = set(session.scalars(select(LabelQuery.query).where(LabelQuery.collection_name == collection_name)))
            fresh = list(dict.fromkeys(q.strip() for q in queries if q and q.strip() and q.strip() not in known))
            session.add_all(LabelQuery(collection_name=collection_name, query=q, source=source) for q in fresh)
            return len(fresh)

    def label_queries(self, collection_name: str) -> list[str]:
        with self.session() as session:
            return list(session.scalars(select(LabelQuery.query).where(LabelQuery.collection_name == collection_name)
                                        .order_by(LabelQuery.id)))

    def labels(self, collection_name: str | None = None) -> list[LabelledPair]:
        with self.session() as session:
            query = select(LabelledPair).order_by(LabelledPair.id)
            if collection_name is not None:
                query = query.where(LabelledPair.collection_name == collection_name)
            return list(session.scalars(query))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the studio read while a training process writes; foreign keys make cascades work.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


# Statuses after which a run does not change by itself (the names are core.training.runs'; storage only
# needs to know when to stamp finished_at).
ENDED_STATUSES = ("done", "finished", "not proven", "rejected", "failed", "cancelled", "interrupted")


class RunStore:
    """Training runs in the database: created at start, updated as they progress, read by UIs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, name: str, **fields: Any) -> None:
        with self.db.session() as session:
            run = session.scalar(select(TrainingRun).where(TrainingRun.name == name))
            if run is None:
                session.add(TrainingRun(name=name, status="running", started_at=utcnow(), **fields))
            else:  # a resumed run keeps its row
                for key, value in fields.items():
                    setattr(run, key, value)
                run.status, run.error, run.finished_at = "running", None, None

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

    def request_cancel(self, name: str) -> None:
        self.set_process(name, cancel_requested=1)

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
