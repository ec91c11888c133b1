"""Retunes (`evonorm-search retune`): where they keep their record, and their results."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from evonorm_search.store.models import Candidate, Evaluation
from evonorm_search.store.queries.front import baseline_layers
from evonorm_search.store.queries.rows import (
    get_search,
)

# Where a retune (`evonorm-search retune`) keeps its settings, the learning rates it tried
# and the one it chose: this key of the retuned candidate's ``measured`` JSON (the
# evaluations table has no column for a learning rate).
RETUNE_KEY = "retune"


def retune_subject(row: dict[str, Any]) -> int | None:
    """The candidate a retune of the baseline row ``row`` (``baseline_layers``) trains and
    stores its evaluations under: the row's own (its zoo graph, an FEC hit's included), or
    its twin where the row holds no graph that parsed."""
    return row["id"] if row["formula"] is not None else row["twin"]


def retune_results(session: Session, name: str) -> list[dict[str, Any]]:
    """The retuned layers of the search ``name``: its candidates with retune evaluations,
    and the zoo's layers on its protocol (``baseline_layers``) that were retuned, best mean
    first.  Each with the chosen ``learning_rate`` and the trials, the ``split`` the final
    seeds were measured on, per-architecture ``scores`` ({mean, std} over the seeds), and
    ``mean`` and ``std`` over the seeds of each seed's mean over the architectures (std:
    the sample standard deviation, None for one seed)."""
    s = get_search(session, name)
    retuned = sa.select(Evaluation.candidate_id).where(Evaluation.stage == "retune")
    ids = session.scalars(
        sa.select(Candidate.id)
        .where(Candidate.search_id == s.id, Candidate.id.in_(retuned))
        .order_by(Candidate.id)
    )
    layers = [(f"#{i}", "candidate", i, None) for i in ids]
    for row in baseline_layers(session, name):
        subject = retune_subject(row)
        if row["scores"] and subject is not None:
            layers.append((row["name"], "baseline", subject, row["mean_score"]))
    results = []
    for layer, kind, candidate_id, proxy_mean in layers:
        c = session.get(Candidate, candidate_id)
        record = (c.measured or {}).get(RETUNE_KEY)
        if record is None:
            continue
        runs = session.execute(
            sa.select(Evaluation.seed, Evaluation.architecture, Evaluation.accuracy).where(
                Evaluation.candidate_id == c.id, Evaluation.stage == "retune"
            )
        ).all()
        results.append(
            {
                "layer": layer,
                "kind": kind,
                "id": c.id,
                "formula": c.formula,
                "proxy_mean": c.mean_score if proxy_mean is None else proxy_mean,
                **record,
                **_retune_summary(runs, s.architectures),
            }
        )
    return sorted(results, key=lambda r: (r["mean"] is None, -(r["mean"] or 0.0), r["layer"]))


def _retune_summary(runs: Sequence[Any], architectures: Sequence[str]) -> dict[str, Any]:
    """Mean and std over seeds, per architecture and of each seed's mean (a seed counts
    there only when every architecture has an accuracy: none diverged or failed)."""
    by_seed: dict[int, dict[str, float | None]] = {}
    for seed, architecture, accuracy in runs:
        by_seed.setdefault(seed, {})[architecture] = accuracy
    seeds = sorted(by_seed)
    scores = {a: _mean_std([by_seed[seed].get(a) for seed in seeds]) for a in architectures}
    means = [
        statistics.fmean(by_seed[seed][a] for a in architectures)
        for seed in seeds
        if all(by_seed[seed].get(a) is not None for a in architectures)
    ]
    return {"seeds": seeds, "scores": scores, **_mean_std(means), "complete_seeds": len(means)}


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(known) if known else None,
        "std": statistics.stdev(known) if len(known) > 1 else None,
    }
