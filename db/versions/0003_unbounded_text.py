"""Text that has no natural bound is TEXT: a space file's absolute path
(``searches.space``) and a fate's reason (``candidates.reason``, which holds trial errors and
compiler refusals quoting formulas).  PostgreSQL refused writes beyond VARCHAR(200); SQLite
never enforced it.  Every row is kept as it was.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# (table, column) widened from VARCHAR(200) to TEXT.
WIDENED = (("searches", "space"), ("candidates", "reason"))


def upgrade() -> None:
    # On SQLite the batch rebuilds each table (copy, drop, rename); evonorm-search's
    # `upgrade` runs it with foreign keys off, so the drop cascades nowhere.
    for table, column in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                existing_type=sa.String(length=200),
                type_=sa.Text(),
                existing_nullable=column == "reason",
            )


def downgrade() -> None:
    # Longer values are cut to fit again (PostgreSQL would refuse the narrower type).
    for table, column in WIDENED:
        op.execute(
            sa.text(
                f"UPDATE {table} SET {column} = substr({column}, 1, 200) "
                f"WHERE length({column}) > 200"
            )
        )
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                existing_type=sa.Text(),
                type_=sa.String(length=200),
                existing_nullable=column == "reason",
            )
