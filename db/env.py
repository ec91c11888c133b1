"""Alembic environment of the results database.

evonorm-search runs migrations on its own connection (``evonorm-search db upgrade``, or
automatically when a search creates a database); it passes the connection in
``config.attributes["connection"]``.  Run by the ``alembic`` command instead (from this
folder, for developers writing a revision), the URL comes from ``$EVONORM_DB``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from evonorm_search.store.models import Base

target_metadata = Base.metadata


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = create_engine(os.environ.get("EVONORM_DB", "sqlite:///evonorm.db"))
    with engine.begin() as connection:
        run_migrations(connection)
