"""Initial schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

The searches, candidates, evaluations and fec tables (see evonorm_search/store/models.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("space", sa.String(length=200), nullable=False),
        sa.Column("strategy", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("architectures", sa.JSON(), nullable=False),
        sa.Column("objectives", sa.JSON(), nullable=False),
        sa.Column("proxy_key", sa.String(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("birth", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("mutation", sa.Text(), nullable=True),
        sa.Column("graph", sa.Text(), nullable=False),
        sa.Column("formula", sa.Text(), nullable=True),
        sa.Column("structural_hash", sa.String(length=64), nullable=True),
        sa.Column("functional_hash", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("measured", sa.JSON(), nullable=False),
        sa.Column("duplicate_of", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.JSON(), nullable=False),
        sa.Column("node_count", sa.Integer(), nullable=True),
        sa.Column("bytes_per_element", sa.Float(), nullable=True),
        sa.Column("compiled", sa.JSON(), nullable=True),
        sa.Column("scores", sa.JSON(), nullable=True),
        sa.Column("mean_score", sa.Float(), nullable=True),
        sa.Column("on_front", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["duplicate_of"],
            ["candidates.id"],
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["candidates.id"],
        ),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("search_id", "birth"),
    )
    op.create_index(
        op.f("ix_candidates_functional_hash"), "candidates", ["functional_hash"], unique=False
    )
    op.create_index(op.f("ix_candidates_parent_id"), "candidates", ["parent_id"], unique=False)
    op.create_index(
        "ix_candidates_search_front", "candidates", ["search_id", "on_front"], unique=False
    )
    op.create_index(
        "ix_candidates_search_mean", "candidates", ["search_id", "mean_score"], unique=False
    )
    op.create_index(
        "ix_candidates_search_status", "candidates", ["search_id", "status"], unique=False
    )
    op.create_index(
        "ix_candidates_search_structure",
        "candidates",
        ["search_id", "structural_hash"],
        unique=False,
    )

    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("architecture", sa.String(length=40), nullable=False),
        sa.Column("dataset", sa.String(length=40), nullable=False),
        sa.Column("preset", sa.String(length=16), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("quality_accuracy", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_evaluations_candidate_id"), "evaluations", ["candidate_id"], unique=False
    )

    op.create_table(
        "fec",
        sa.Column("functional_hash", sa.String(length=64), nullable=False),
        sa.Column("proxy_key", sa.String(length=64), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("functional_hash", "proxy_key"),
    )


def downgrade() -> None:
    op.drop_table("fec")
    op.drop_index(op.f("ix_evaluations_candidate_id"), table_name="evaluations")

    op.drop_table("evaluations")
    op.drop_index("ix_candidates_search_structure", table_name="candidates")
    op.drop_index("ix_candidates_search_status", table_name="candidates")
    op.drop_index("ix_candidates_search_mean", table_name="candidates")
    op.drop_index("ix_candidates_search_front", table_name="candidates")
    op.drop_index(op.f("ix_candidates_parent_id"), table_name="candidates")
    op.drop_index(op.f("ix_candidates_functional_hash"), table_name="candidates")

    op.drop_table("candidates")
    op.drop_table("searches")
