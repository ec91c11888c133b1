"""The results store: every candidate a search touches, with its fate and its scores, in a
SQL database (SQLite by default, PostgreSQL for clusters; schema managed by Alembic in
``db/``).

    from evonorm_search.store import Store
    store = Store("sqlite:///evonorm.db", readonly=True)
    store.pareto("my-search")          # the non-dominated candidates
    store.status("my-search")          # counts by fate, best so far

Importing this package imports SQLAlchemy; the core package never does.
"""

from evonorm_search.errors import StoreError
from evonorm_search.pareto import non_dominated
from evonorm_search.store.engine import DEFAULT_URL, default_url, make_engine, mask, upgrade
from evonorm_search.store.queries import DERIVED_OBJECTIVES
from evonorm_search.store.store import Store, StoreFEC, check_search_name

__all__ = [
    "DEFAULT_URL",
    "DERIVED_OBJECTIVES",
    "Store",
    "StoreError",
    "StoreFEC",
    "check_search_name",
    "default_url",
    "make_engine",
    "mask",
    "non_dominated",
    "upgrade",
]
