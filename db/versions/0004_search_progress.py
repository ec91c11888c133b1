"""A search's worker time over every sitting and its strategy's random state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(
            sa.Column("worker_seconds", sa.Float(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("strategy_state", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.drop_column("strategy_state")
        batch.drop_column("worker_seconds")
