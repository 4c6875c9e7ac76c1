"""The database's tables (SQLAlchemy 2 declarative): collections and their items, labels and queued
label queries, training runs and their processes, evaluations with per-query results, and the
background fine-tuner's examples and state. Schema changes are alembic migrations
(``storage/migrations``); a test checks that the migrations build exactly these tables.
"""

from __future__ import annotations

import datetime as dt
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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


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
    generation: Mapped[int | None] = mapped_column(Integer, default=None)
    """The generation of the folder's files this row describes (``core.collection.disk``); None: whatever the
    folder's manifest names (rows written before generations were recorded)."""
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
    splits: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The queries of each split (``{"train": {"ids": [...], "texts": [...]}, "validation": ..., "test": ...}``)
    and where the test split was written (``test_set``): what keeps an evaluation from leaking training data."""
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
