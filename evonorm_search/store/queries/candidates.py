"""One candidate: its row with its evaluations and transfer summary, and its lineage."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from evonorm_search.errors import NotFoundError
from evonorm_search.store.models import Candidate, Evaluation, Search
from evonorm_search.store.queries.rows import (
    candidate_dict,
)


def _candidate_row(session: Session, candidate_id: int) -> tuple[Candidate, str]:
    row = session.execute(
        sa.select(Candidate, Search.name)
        .join(Search, Search.id == Candidate.search_id)
        .where(Candidate.id == candidate_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"unknown candidate id {candidate_id}")
    return row[0], row[1]


def candidate(session: Session, candidate_id: int) -> dict[str, Any]:
    """One candidate with its evaluations and its lineage."""
    c, search_name = _candidate_row(session, candidate_id)
    record = candidate_dict(c, search_name)
    evaluations = session.scalars(
        sa.select(Evaluation).where(Evaluation.candidate_id == c.id).order_by(Evaluation.id)
    )
    record["evaluations"] = [
        {
            "stage": e.stage,
            "architecture": e.architecture,
            "dataset": e.dataset,
            "preset": e.preset,
            "seed": e.seed,
            "steps": e.steps,
            "accuracy": e.accuracy,
            "loss": e.loss,
            "quality_accuracy": e.quality_accuracy,
            "status": e.status,
            "seconds": e.seconds,
            "node": e.node,
            "code_version": e.code_version,
            "figures": e.figures,
        }
        for e in evaluations
    ]
    record["transfer"] = transfer_summary(record["evaluations"])
    record["lineage"] = lineage(session, c.id)
    return record


def transfer_summary(evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A candidate's transfer runs (stage ``transfer``, the seeds' phase) grouped by
    network and learning rate: the seeds, and per split (transfer-validation,
    transfer-test, test where measured) the mean accuracy with its 95% t-interval over the
    seeds that completed."""
    from evonorm_search.stats import mean_interval

    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for e in evaluations:
        f = e.get("figures") or {}
        if e["stage"] == "transfer" and f.get("phase") == "final":
            groups.setdefault((e["architecture"], f["learning_rate"]), []).append(e)
    summary = []
    for (network, rate), runs in sorted(groups.items()):
        completed = sum(e["status"] == "completed" for e in runs)
        row: dict[str, Any] = {
            "network": network,
            "learning_rate": rate,
            "completed": completed,
            "seeds": sorted(e["seed"] for e in runs),
        }
        for split in ("transfer_val", "transfer_test", "test"):
            values = [
                e["accuracy"]
                if split == "transfer_val"
                else ((e["figures"].get(split) or {}).get("accuracy"))
                for e in runs
                if e["status"] == "completed"
            ]
            values = [v for v in values if v is not None]
            row[split] = mean_interval(values).to_dict() if values else None
        summary.append(row)
    return summary


def lineage(session: Session, candidate_id: int) -> list[dict[str, Any]]:
    """The candidate and its ancestors back to the initial population, newest first, each
    with the mutation that produced it from the next one (one recursive query)."""
    _candidate_row(session, candidate_id)
    chain = (
        sa.select(Candidate.id, Candidate.parent_id, sa.literal(0).label("depth"))
        .where(Candidate.id == candidate_id)
        .cte("chain", recursive=True)
    )
    chain = chain.union_all(
        sa.select(Candidate.id, Candidate.parent_id, (chain.c.depth + 1).label("depth")).join(
            chain, Candidate.id == chain.c.parent_id
        )
    )
    rows = session.execute(
        sa.select(
            Candidate.id,
            Candidate.formula,
            Candidate.mutation,
            Candidate.status,
            Candidate.mean_score,
        )
        .join(chain, Candidate.id == chain.c.id)
        .order_by(chain.c.depth)
    )
    return [
        {"id": i, "formula": f, "mutation": m, "status": st, "mean_score": score}
        for i, f, m, st, score in rows
    ]
