"""The rows the queries return: a search and a candidate as plain dicts, their scores decoded,
and the objectives a front is computed over."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from evonorm_search.errors import NotFoundError, StoreError
from evonorm_search.store.models import Candidate, Search

# Objectives besides per-architecture accuracy (named by the architecture): mean accuracy
# (maximised), and two costs (minimised): the compiled kernels' bytes moved per element
# (forward + backward) and the graph's node count.
DERIVED_OBJECTIVES = {
    "mean": "mean accuracy over the proxy architectures",
    "cost": "bytes moved per element by the compiled kernels (minimised)",
    "nodes": "intermediate nodes in the graph (minimised)",
}


# Scores read in bulk come as text and are decoded here: SQLAlchemy's JSON type cost three
# times json.loads per row over 10,000 rows (the dashboard's front and cloud read them all).
SCORES_TEXT = sa.cast(Candidate.scores, sa.Text)


def load_scores(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


def validate_objectives(objectives: Sequence[str], architectures: Sequence[str]) -> list[str]:
    """``objectives`` checked against a search's architectures and the derived ones."""
    known = [*architectures, *DERIVED_OBJECTIVES]
    unknown = [o for o in objectives if o not in known]
    if unknown or not objectives or len(set(objectives)) != len(objectives):
        raise StoreError(
            f"bad objectives {', '.join(objectives) or '(none)'}: choose distinct ones among "
            f"{', '.join(known)}"
        )
    return list(objectives)


def objective_vector(
    objectives: Sequence[str],
    scores: dict[str, Any] | None,
    mean: float | None,
    cost: float | None,
    nodes: int | None,
) -> list[float] | None:
    """The point of a candidate in objective space, every objective maximised (costs
    negated); None when one of its values is missing."""
    values: list[float | None] = []
    for o in objectives:
        if o == "mean":
            values.append(mean)
        elif o == "cost":
            values.append(None if cost is None else -cost)
        elif o == "nodes":
            values.append(None if nodes is None else -float(nodes))
        else:
            values.append((scores or {}).get(o))
    if any(v is None for v in values):
        return None
    return [float(v) for v in values]


def get_search(session: Session, name: str) -> Search:
    found = session.scalars(sa.select(Search).where(Search.name == name)).one_or_none()
    if found is None:
        known = session.scalars(sa.select(Search.name).order_by(Search.id).limit(10)).all()
        hint = f" (searches: {', '.join(known)})" if known else " (the database has none)"
        raise NotFoundError(f"unknown search {name!r}{hint}")
    return found


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC."""
    if value is None:
        return None
    return utc(value).isoformat()


def search_dict(s: Search) -> dict[str, Any]:
    return {
        "name": s.name,
        "space": s.space,
        "strategy": s.strategy,
        "status": s.status,
        "seed": s.seed,
        "budget": s.budget,
        "architectures": list(s.architectures),
        "objectives": list(s.objectives),
        "proxy_key": s.proxy_key,
        "code_version": s.code_version,
        "config": s.config,
        "worker_seconds": s.worker_seconds,
        "strategy_state": s.strategy_state,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
        "finished_at": iso(s.finished_at),
    }


def candidate_dict(c: Candidate, search_name: str | None = None) -> dict[str, Any]:
    return {
        "id": c.id,
        "search": search_name,
        "birth": c.birth,
        "formula": c.formula,
        "scores": dict(c.scores) if c.scores is not None else None,
        "mean_score": c.mean_score,
        "status": c.status,
        "stage": c.stage,
        "reason": c.reason,
        "detail": c.detail,
        "on_front": c.on_front,
        "parent": c.parent_id,
        "mutation": c.mutation,
        "duplicate_of": c.duplicate_of,
        "structural_hash": c.structural_hash,
        "functional_hash": c.functional_hash,
        "node_count": c.node_count,
        "bytes_per_element": c.bytes_per_element,
        "compiled": c.compiled,
        "measured": dict(c.measured),
        "seconds": dict(c.seconds),
        "graph": c.graph,
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
    }
