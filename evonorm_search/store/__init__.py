"""The results store: every candidate a search touches, with its fate and its scores, in a
SQL database (SQLite by default, PostgreSQL for clusters; schema managed by Alembic in
``db/``).

    from evonorm_search.store import Store
    store = Store("sqlite:///evonorm.db", readonly=True)
    store.pareto("my-search")          # the non-dominated candidates
    store.status("my-search")          # counts by fate, best so far

Importing this package imports SQLAlchemy; the core package never does.  This package is the
store's one public door: code above it imports from ``evonorm_search.store``, never from its
modules (an import-linter contract holds it).
"""

from evonorm_search.errors import StoreError
from evonorm_search.pareto import non_dominated
from evonorm_search.store.engine import DEFAULT_URL, default_url, make_engine, mask, upgrade
from evonorm_search.store.models import NAMED
from evonorm_search.store.queries import (
    BASELINE_STRATEGY,
    DERIVED_OBJECTIVES,
    RETUNE_KEY,
    pareto_json,
    retune_subject,
    validate_objectives,
)
from evonorm_search.store.store import Store, StoreFEC, check_search_name

__all__ = [
    "BASELINE_STRATEGY",
    "DEFAULT_URL",
    "DERIVED_OBJECTIVES",
    "NAMED",
    "RETUNE_KEY",
    "Store",
    "StoreError",
    "StoreFEC",
    "check_search_name",
    "default_url",
    "make_engine",
    "mask",
    "non_dominated",
    "pareto_json",
    "retune_subject",
    "upgrade",
    "validate_objectives",
]
