"""Rankings: the Pareto front (with the zoo's layers beside it) and the top k."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from evonorm_search import baselines
from evonorm_search.errors import StoreError
from evonorm_search.pareto import non_dominated
from evonorm_search.store.models import Candidate, FECEntry, Search
from evonorm_search.store.queries.rows import (
    SCORES_TEXT,
    candidate_dict,
    get_search,
    load_scores,
    objective_vector,
    validate_objectives,
)


def pareto(
    session: Session,
    name: str,
    objectives: Sequence[str] | None = None,
    *,
    recompute: bool = False,
) -> list[dict[str, Any]]:
    """The non-dominated trained candidates of a search, best mean accuracy first.

    Over the search's own objectives (per-architecture accuracy unless it chose others)
    this is an indexed read of the front the writer maintains; other objectives (or
    ``recompute``) compute it from every trained candidate's scores.  An FEC hit is not a
    point of its own.
    """
    s = get_search(session, name)
    chosen = validate_objectives(objectives or s.objectives, s.architectures)
    if chosen == list(s.objectives) and not recompute:
        rows = session.scalars(
            sa.select(Candidate).where(Candidate.search_id == s.id, Candidate.on_front)
        ).all()
    else:
        points = session.execute(
            sa.select(
                Candidate.id,
                SCORES_TEXT,
                Candidate.mean_score,
                Candidate.bytes_per_element,
                Candidate.node_count,
            ).where(Candidate.search_id == s.id, Candidate.status == "trained")
        ).all()
        ids, vectors = [], []
        for cid, scores, *values in points:
            vector = objective_vector(chosen, load_scores(scores), *values)
            if vector is not None:
                ids.append(cid)
                vectors.append(vector)
        front = [ids[i] for i in non_dominated(np.array(vectors).reshape(len(ids), len(chosen)))]
        rows = _by_ids(session, front)
    result = [candidate_dict(c, s.name) for c in rows]
    for row in result:
        row["objectives"] = dict(zip(chosen, _display(chosen, row), strict=True))
    return sorted(result, key=lambda r: (-(r["mean_score"] or 0.0), r["id"]))


# What `pareto --format json` and the dashboard's /pareto endpoint show of a front row and
# of a baseline row.
FRONT_KEYS = (
    "id",
    "formula",
    "scores",
    "mean_score",
    "objectives",
    "bytes_per_element",
    "node_count",
    "parent",
    "birth",
    "structural_hash",
    "functional_hash",
)
BASELINE_KEYS = (
    "name",
    "id",
    "search",
    "seed",
    "status",
    "stage",
    "reason",
    "formula",
    "scores",
    "mean_score",
    "objectives",
    "twin",
    "bytes_per_element",
    "node_count",
    "structural_hash",
    "functional_hash",
)


def pareto_json(
    front: Sequence[dict[str, Any]], zoo: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]] | dict[str, list[dict[str, Any]]]:
    """The front's rows as `pareto --format json` prints them; with ``zoo`` (the rows of
    ``baseline_layers``, even none) ``{"front": ..., "baselines": ...}``."""
    rows = [{k: r[k] for k in FRONT_KEYS} for r in front]
    if zoo is None:
        return rows
    return {"front": rows, "baselines": [{k: r[k] for k in BASELINE_KEYS} for r in zoo]}


# The strategy of the searches that `baselines evaluate` runs (search.strategies.Zoo).
BASELINE_STRATEGY = "zoo"


def baseline_layers(
    session: Session, name: str, objectives: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The baseline zoo's layers evaluated on the protocol of the search ``name``: the
    candidates of the baseline searches (`baselines evaluate`) with its proxy key, one row
    per zoo layer (``name``, in the zoo's order) with its fate, scores and ``objectives``
    (as ``pareto``'s).  A layer that was an FEC hit has its twin's scores (``twin``: the
    twin's id).  Where several baseline searches match (other seeds), the one with the
    search's seed wins, then the oldest: a baseline search's own layers are its zoo."""
    s = get_search(session, name)
    chosen = validate_objectives(objectives or s.objectives, s.architectures)
    sources = session.execute(
        sa.select(Search.id, Search.name, Search.seed).where(
            Search.strategy == BASELINE_STRATEGY, Search.proxy_key == s.proxy_key
        )
    ).all()
    rows: dict[str, dict[str, Any]] = {}
    for search_id, search_name, seed in sorted(sources, key=lambda r: (r.seed != s.seed, r.id)):
        layers = session.scalars(
            sa.select(Candidate)
            .where(Candidate.search_id == search_id, Candidate.mutation.like("baseline %"))
            .order_by(Candidate.birth)
        )
        for c in layers:
            layer = c.mutation.removeprefix("baseline ")
            if layer in rows:
                continue
            row = {"name": layer, **candidate_dict(c, search_name), "seed": seed, "twin": None}
            twin = _twin(session, c, s.proxy_key)
            if twin is not None:
                row.update(scores=dict(twin.scores), mean_score=twin.mean_score, twin=twin.id)
            row["objectives"] = dict(zip(chosen, _display(chosen, row), strict=True))
            rows[layer] = row
    order = {n: i for i, n in enumerate(baselines.names())}
    return sorted(rows.values(), key=lambda r: order.get(r["name"], len(order)))


def _twin(session: Session, c: Candidate, proxy_key: str) -> Candidate | None:
    """The trained candidate whose fitness the duplicate ``c`` shares: its FEC twin."""
    if c.status != "duplicate":
        return None
    twin_id = c.duplicate_of
    if twin_id is None and c.functional_hash is not None:  # its twin was in flight then
        entry = session.get(FECEntry, (c.functional_hash, proxy_key))
        twin_id = entry.candidate_id if entry is not None else None
    twin = session.get(Candidate, twin_id) if twin_id is not None else None
    return twin if twin is not None and twin.status == "trained" else None


def _display(objectives: Sequence[str], row: dict[str, Any]) -> list[Any]:
    derived = {
        "mean": row["mean_score"],
        "cost": row["bytes_per_element"],
        "nodes": row["node_count"],
    }
    return [derived[o] if o in derived else (row["scores"] or {}).get(o) for o in objectives]


def _by_ids(session: Session, ids: Sequence[int]) -> list[Candidate]:
    rows: list[Candidate] = []
    for start in range(0, len(ids), 500):  # stay under bound-parameter limits
        rows.extend(
            session.scalars(sa.select(Candidate).where(Candidate.id.in_(ids[start : start + 500])))
        )
    return rows


def top(session: Session, name: str, k: int = 10, by: str = "mean") -> list[dict[str, Any]]:
    """The ``k`` best trained candidates by mean accuracy or one architecture's."""
    s = get_search(session, name)
    if by != "mean" and by not in s.architectures:
        raise StoreError(f"top-k ranks by accuracy: 'mean' or one of {', '.join(s.architectures)}")
    query = sa.select(Candidate).where(Candidate.search_id == s.id, Candidate.status == "trained")
    if by == "mean":
        rows = session.scalars(
            query.order_by(Candidate.mean_score.desc(), Candidate.id).limit(k)
        ).all()
    else:  # scores live in JSON; rank in Python (a search trains thousands, not millions)
        rows = sorted(session.scalars(query), key=lambda c: (-(c.scores or {}).get(by, -1), c.id))
        rows = rows[:k]
    return [candidate_dict(c, s.name) for c in rows]
