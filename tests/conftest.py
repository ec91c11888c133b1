import os
import uuid

import pytest
from hypothesis import HealthCheck, settings

# Torch's first calls are slow, so no per-example deadline; CI may raise the example count.
settings.register_profile(
    "default", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# -- databases for the store's tests -------------------------------------------------------

POSTGRES = os.environ.get("EVONORM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_database():
    """A fresh, empty PostgreSQL database (dropped afterwards), or a skip saying why not."""
    import sqlalchemy as sa

    from evonorm_search.store import StoreError, make_engine

    try:
        admin = make_engine(POSTGRES).execution_options(isolation_level="AUTOCOMMIT")
    except StoreError as e:  # no driver installed
        pytest.skip(f"PostgreSQL tests: {e}")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as e:
        admin.engine.dispose()
        reason = str(e.orig).strip().splitlines()[0]
        pytest.skip(f"no PostgreSQL at {POSTGRES} ($EVONORM_TEST_POSTGRES): {reason}")
    name = f"evonorm_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'evonorm.db'}"
    else:
        yield from postgres_database()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'evonorm.db'}"
