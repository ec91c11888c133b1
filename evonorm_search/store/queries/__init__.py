"""Read queries over the store: searches, status, funnel, Pareto front, lineage, top-k.

Every function takes a SQLAlchemy ``Session`` and returns plain data (dicts, lists), the
shape the CLI prints as JSON and the dashboard serves, so that both say the same thing.
"""

from evonorm_search.store.queries.candidates import candidate, lineage
from evonorm_search.store.queries.front import (
    BASELINE_STRATEGY,
    baseline_layers,
    pareto,
    pareto_json,
    top,
)
from evonorm_search.store.queries.funnel import best_so_far, funnel, searches, status
from evonorm_search.store.queries.retunes import RETUNE_KEY, retune_results, retune_subject
from evonorm_search.store.queries.rows import (
    DERIVED_OBJECTIVES,
    SCORES_TEXT,
    candidate_dict,
    get_search,
    load_scores,
    objective_vector,
    search_dict,
    validate_objectives,
)

__all__ = [
    "BASELINE_STRATEGY",
    "DERIVED_OBJECTIVES",
    "RETUNE_KEY",
    "SCORES_TEXT",
    "baseline_layers",
    "best_so_far",
    "candidate",
    "candidate_dict",
    "funnel",
    "get_search",
    "lineage",
    "load_scores",
    "objective_vector",
    "pareto",
    "pareto_json",
    "retune_results",
    "retune_subject",
    "search_dict",
    "searches",
    "status",
    "top",
    "validate_objectives",
]
