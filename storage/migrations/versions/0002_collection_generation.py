"""A collection's row names the generation of its folder it describes (``collections.generation``).

Indexing writes the new generation's files, commits the row naming it, and only then switches the folder's
manifest: a process killed between the two leaves a row that names complete files, which the next open
rolls forward to. Rows of databases made before this revision hold NULL: they describe whatever the folder's
manifest says, checked by their item count.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("generation")
