"""The first release's schema: collections, items, labels, label queries, training runs and their
processes, evaluations with per-query results, the fine-tuner's examples and state.

A database created by that release (``create_all``, no ``alembic_version`` table) already has these
tables: they are kept as they are, with their rows, and the database is at this revision from then on.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _create_missing(name: str, *columns: sa.SchemaItem, indexed: tuple[str, ...] = ()) -> None:
    """Every first-release table has an integer ``id`` primary key and plain single-column indexes; a table
    ``create_all`` already made is left as it is, with its rows."""
    if name in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(name, sa.Column("id", sa.Integer(), nullable=False), *columns, sa.PrimaryKeyConstraint("id"))
    for column in indexed:
        op.create_index(op.f(f"ix_{name}_{column}"), name, [column], unique=False)


def upgrade() -> None:
    _create_missing(
        "collections",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("model_spec", sa.String(length=500), nullable=False),
        sa.Column("model_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("index_kind", sa.String(length=200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name"),
    )
    _create_missing(
        "evaluations",
        sa.Column("run_name", sa.String(length=200), nullable=True),
        sa.Column("model_spec", sa.String(length=500), nullable=False),
        sa.Column("model_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("data_source", sa.Text(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        indexed=("run_name",),
    )
    _create_missing(
        "finetune_examples",
        sa.Column("collection_name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("workflow_id", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        indexed=("collection_name",),
    )
    _create_missing(
        "finetune_states",
        sa.Column("collection_name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("trainings_run", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("examples_seen", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("last_loss", sa.Float(), nullable=True),
        sa.Column("current_checkpoint", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("metrics_history", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("collection_name"),
    )
    _create_missing(
        "label_queries",
        sa.Column("collection_name", sa.String(length=200), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("collection_name", "query"),
        indexed=("collection_name",),
    )
    _create_missing(
        "labelled_pairs",
        sa.Column("collection_name", sa.String(length=200), nullable=True),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("item_key", sa.String(length=500), nullable=False),
        sa.Column("item_text", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("annotator", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 1", name="score_in_unit_range"),
        indexed=("collection_name",),
    )
    _create_missing(
        "run_processes",
        sa.Column("run_name", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("process_started", sa.Float(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Integer(), nullable=False),
        sa.UniqueConstraint("run_name"),
    )
    _create_missing(
        "training_runs",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("collection_name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("epoch_metrics", sa.JSON(), nullable=False),
        sa.Column("before_after", sa.JSON(), nullable=False),
        sa.Column("model_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("name"),
        indexed=("collection_name",),
    )
    _create_missing(
        "evaluation_query_results",
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.String(length=500), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluations.id"], ondelete="CASCADE"),
        indexed=("evaluation_id",),
    )
    _create_missing(
        "items",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("item_key", sa.String(length=500), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("image_path", sa.Text(), nullable=True),
        sa.Column("metadata_json", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("collection_id", "item_key"),
        indexed=("collection_id",),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_items_collection_id"), table_name="items")
    op.drop_table("items")
    op.drop_index(op.f("ix_evaluation_query_results_evaluation_id"), table_name="evaluation_query_results")
    op.drop_table("evaluation_query_results")
    op.drop_index(op.f("ix_training_runs_collection_name"), table_name="training_runs")
    op.drop_table("training_runs")
    op.drop_table("run_processes")
    op.drop_index(op.f("ix_labelled_pairs_collection_name"), table_name="labelled_pairs")
    op.drop_table("labelled_pairs")
    op.drop_index(op.f("ix_label_queries_collection_name"), table_name="label_queries")
    op.drop_table("label_queries")
    op.drop_table("finetune_states")
    op.drop_index(op.f("ix_finetune_examples_collection_name"), table_name="finetune_examples")
    op.drop_table("finetune_examples")
    op.drop_index(op.f("ix_evaluations_run_name"), table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_table("collections")
    # ### end Alembic commands ###
