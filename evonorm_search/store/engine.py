"""Engines from URLs, and the schema's revision (Alembic) checked on every open.

SQLite is opened in WAL mode with a busy timeout, so that readers never block the writer
nor the writer them; read-only opens also refuse writes in the database itself (SQLite's
``query_only``, PostgreSQL's read-only transactions).  Every error is a ``StoreError``
whose message never shows a password.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from evonorm_search.errors import StoreError
from evonorm_search.resources import resource_dir

__all__ = [
    "DEFAULT_URL",
    "check_schema",
    "default_url",
    "driver_message",
    "make_engine",
    "mask",
    "scrub",
    "upgrade",
]

DEFAULT_URL = "sqlite:///evonorm.db"
BUSY_TIMEOUT_S = 30.0


def default_url() -> str:
    """``$EVONORM_DB``, else a SQLite file ``evonorm.db`` in the working directory."""
    return os.environ.get("EVONORM_DB") or DEFAULT_URL


# Query parameters that carry credentials (password, sslpassword, passfile, passwd, ...).
_CREDENTIAL = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_CREDENTIAL_PARAMETER = re.compile(
    r"([?&][^=&?]*(?:pass|pwd|secret|token)[^=&?]*=)[^&]*", re.IGNORECASE
)
HIDDEN = "***"


def mask(url: str | URL) -> str:
    """The URL with every credential hidden, for messages, logs and pages: the password of
    its user info (also one holding an unescaped ``@`` or ``/``: the user info ends at the
    last ``@``) and query parameters such as ``password``, ``sslpassword`` and ``passfile``;
    shown without the driver this module may have chosen for it.  URLs that do not parse
    are masked the same way."""
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    with contextlib.suppress(Exception):
        parsed = make_url(text)
        text = parsed.set(drivername=parsed.get_backend_name()).render_as_string(
            hide_password=False
        )
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    # The query starts at the first "?" after the last "@": a password may hold "?" too.
    query_start = rest.find("?", rest.rfind("@") + 1)
    address, query = (rest, "") if query_start < 0 else (rest[:query_start], rest[query_start:])
    user_info, at, place = address.rpartition("@")
    if at and ":" in user_info:
        address = f"{user_info.split(':', 1)[0]}:{HIDDEN}@{place}"
    return _CREDENTIAL_PARAMETER.sub(rf"\1{HIDDEN}", f"{scheme}{separator}{address}{query}")


def scrub(text: str, url: str | URL) -> str:
    """``text`` (a driver's error message, say) with the credentials of ``url`` hidden
    wherever it quotes them."""
    try:
        parsed = make_url(url)
    except Exception:
        return text
    secrets = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if _CREDENTIAL.search(key):
            secrets += [value] if isinstance(value, str) else list(value)
    for secret in sorted({str(s) for s in secrets if len(str(s)) >= 3}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


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


@contextlib.contextmanager
def _connect(engine: Engine) -> Iterator[sa.Connection]:
    """A connection whose database errors end as one-line StoreErrors naming the database:
    a server that does not answer, a file that is not a SQLite database or is damaged."""
    try:
        with engine.connect() as connection:
            yield connection
    except sa.exc.DBAPIError as e:
        raise StoreError(
            f"cannot use {mask(engine.url)}: {driver_message(e, engine.url)}"
        ) from None


def driver_message(error: sa.exc.DBAPIError, url: str | URL) -> str:
    """The first line of a driver's error, with the credentials of ``url`` hidden."""
    reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    return scrub(reason, url)


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
            raise StoreError(
                f"no evonorm-search database at {mask(engine.url)} (a search "
                "or `evonorm-search db upgrade` creates one)"
            )
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
    with _connect(engine) as connection, _migration(connection):
        command.upgrade(_alembic_config(connection), "head")
    return before, _head()


@contextlib.contextmanager
def _migration(connection: sa.Connection) -> Iterator[None]:
    """One transaction around a migration.  On SQLite, the documented way to change a
    schema: foreign keys off (a table rebuild drops the old table, which would otherwise
    cascade to every row that refers to it), an explicit BEGIN so that DDL is inside the
    transaction too (the sqlite3 module begins only before DML), and a foreign key check
    before the commit."""
    if connection.dialect.name != "sqlite":
        with connection.begin():
            yield
        return
    raw = connection.connection.driver_connection
    saved = raw.isolation_level
    raw.isolation_level = None  # the module's implicit transactions off: ours is explicit
    connection.exec_driver_sql("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction
    connection.commit()
    try:
        with connection.begin():
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise StoreError(
                    f"the migration of {mask(connection.engine.url)} would break "
                    f"{len(broken)} references: rolled back, nothing changed"
                )
    finally:
        connection.exec_driver_sql("PRAGMA foreign_keys = ON")
        connection.commit()
        raw.isolation_level = saved


def _newer(engine: Engine, revision: str) -> str:
    return (
        f"database {mask(engine.url)} is at schema revision {revision}, newer than this "
        f"evonorm-search knows (head {_head()}): upgrade evonorm-search to use it"
    )
