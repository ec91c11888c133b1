"""Engines from URLs, and the schema's revision (Alembic) checked on every open.

SQLite is opened in WAL mode with a busy timeout, so that readers never block the writer
nor the writer them; read-only opens also refuse writes in the database itself (SQLite's
``query_only``, PostgreSQL's read-only transactions).  Every error is a ``StoreError``
whose message never shows a password.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from evonorm_search.errors import StoreError
from evonorm_search.resources import resource_dir

__all__ = ["DEFAULT_URL", "check_schema", "default_url", "make_engine", "mask", "upgrade"]

DEFAULT_URL = "sqlite:///evonorm.db"
BUSY_TIMEOUT_S = 30.0


def default_url() -> str:
    """``$EVONORM_DB``, else a SQLite file ``evonorm.db`` in the working directory."""
    return os.environ.get("EVONORM_DB") or DEFAULT_URL


def mask(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs (also for URLs that do
    not parse), and without the driver this module may have chosen for it."""
    try:
        parsed = make_url(url)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


def _parse(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except Exception:
        raise StoreError(
            f"malformed database URL {mask(url)!r}: expected e.g. sqlite:///evonorm.db or "
            "postgresql://user@host/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database {backend!r} in {mask(parsed)}: use sqlite:// or postgresql://"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername=_postgresql_driver())
    return parsed


def _postgresql_driver() -> str:
    """A plain ``postgresql://`` URL takes whichever driver is installed (SQLAlchemy 2.0
    defaults to psycopg2, 2.1 to psycopg 3; users have either)."""
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return driver
    raise StoreError("PostgreSQL needs a driver: pip install 'evonorm-search[postgres]'")


def make_engine(url: str | URL, *, readonly: bool = False) -> Engine:
    """An engine for ``url``.  A SQLite file must exist when ``readonly`` (a reader never
    creates a database); its directory must exist otherwise."""
    parsed = _parse(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:"):
            if readonly and not Path(path).is_file():
                raise StoreError(f"no database at {mask(parsed)} (a search creates one)")
            if not Path(path).resolve().parent.is_dir():
                raise StoreError(f"cannot create {mask(parsed)}: no directory {Path(path).parent}")
        connect_args["timeout"] = BUSY_TIMEOUT_S
    else:
        connect_args["connect_timeout"] = 10
    engine = sa.create_engine(parsed, connect_args=connect_args)
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine, readonly)
    elif readonly:
        _configure_postgresql_readonly(engine)
    return engine


def _configure_sqlite(engine: Engine, readonly: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if readonly:
            cursor.execute("PRAGMA query_only = ON")
        else:
            cursor.execute("PRAGMA journal_mode = WAL")  # persistent: readers inherit it
        cursor.close()


def _configure_postgresql_readonly(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.close()
        dbapi_connection.commit()


def _alembic_config(connection: sa.Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resource_dir("db")))
    config.attributes["connection"] = connection
    return config


def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _connect(engine: Engine) -> sa.Connection:
    try:
        return engine.connect()
    except sa.exc.OperationalError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise StoreError(f"cannot connect to {mask(engine.url)}: {reason}") from None


def check_schema(engine: Engine, *, create: bool) -> None:
    """Make sure the database is at this code's schema revision: a new (empty) database
    is created at head when ``create``; an older revision asks for ``db upgrade``; a newer
    one, or a database that is not evonorm-search's, is refused."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with _connect(engine) as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        tables = set(sa.inspect(connection).get_table_names())
    head = _head()
    if current == head:
        return
    if current is None:
        if tables - {"alembic_version"}:
            raise StoreError(f"{mask(engine.url)} is not an evonorm-search database")
        if not create:
            raise StoreError(f"no evonorm-search database at {mask(engine.url)} (a search "
                             "or `evonorm-search db upgrade` creates one)")  # fmt: skip
        upgrade(engine)
        return
    script = ScriptDirectory.from_config(_alembic_config())
    known = {revision.revision for revision in script.walk_revisions()}
    if current in known:
        raise StoreError(
            f"database {mask(engine.url)} is at schema revision {current}, older than this "
            f"code's {head}: run `evonorm-search db upgrade --db URL` (back it up first)"
        )
    raise StoreError(_newer(engine, current))


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate the database to head in one transaction; returns (from, to) revisions."""
    from alembic import command
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with _connect(engine) as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        tables = set(sa.inspect(connection).get_table_names())
    if before is None and tables - {"alembic_version"}:
        raise StoreError(f"{mask(engine.url)} is not an evonorm-search database")
    script = ScriptDirectory.from_config(_alembic_config())
    if before is not None and before not in {r.revision for r in script.walk_revisions()}:
        raise StoreError(_newer(engine, before))
    with _connect(engine) as connection, connection.begin():
        command.upgrade(_alembic_config(connection), "head")
    return before, _head()


def _newer(engine: Engine, revision: str) -> str:
    return (
        f"database {mask(engine.url)} is at schema revision {revision}, newer than this "
        f"evonorm-search knows (head {_head()}): upgrade evonorm-search to use it"
    )
