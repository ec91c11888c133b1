"""Evaluations record the code version they ran with and a stage's extra figures; the
checkpoints of long runs (transfer) live in the database, so a run resumes on any node.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("code_version", sa.String(40), nullable=True))
        batch.add_column(sa.Column("figures", sa.JSON(), nullable=True))
    op.create_table(
        "checkpoints",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column(
            "candidate_id",
            sa.Integer(),
            sa.ForeignKey("candidates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_checkpoints_candidate_id", "checkpoints", ["candidate_id"])


def downgrade() -> None:
    op.drop_index("ix_checkpoints_candidate_id", table_name="checkpoints")
    op.drop_table("checkpoints")
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("figures")
        batch.drop_column("code_version")
