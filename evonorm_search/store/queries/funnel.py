"""A search's progress: its status, funnel, worker time by fate and best-so-far curve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from evonorm_search.store.models import NAMED, Candidate, Evaluation, Search
from evonorm_search.store.queries.rows import (
    get_search,
    iso,
    utc,
)
from evonorm_search.worker_time import fate_of, trial_seconds

# A layer named for transfer (`transfer --layer FORMULA`, status NAMED) is a candidate of
# the search that is no part of its funnel: its counts, rates and history leave it out.


def _counts(session: Session, search_id: int) -> dict[tuple[str, str | None], int]:
    rows = session.execute(
        sa.select(Candidate.status, Candidate.stage, sa.func.count())
        .where(Candidate.search_id == search_id, Candidate.status != NAMED)
        .group_by(Candidate.status, Candidate.stage)
    )
    return {(status, stage): n for status, stage, n in rows}


def _best(session: Session, search_id: int) -> Candidate | None:
    return session.scalars(
        sa.select(Candidate)
        .where(Candidate.search_id == search_id, Candidate.mean_score.is_not(None))
        .order_by(Candidate.mean_score.desc(), Candidate.id)
        .limit(1)
    ).one_or_none()


# Where a candidate can stop, in the order a search's funnel runs: screening (stages 1-5),
# then in its trial the learning signal, the quality checkpoint, the compile stage (on a
# CPU; a CUDA trial compiles first), full training (where it diverged) and the trial itself
# (a process that failed for good).
FUNNEL_STAGES = (
    "static",
    "duplicate",
    "functional",
    "numeric",
    "stability",
    "signal",
    "quality",
    "compile",
    "training",
    "trial",
)


def worker_time_by_fate(session: Session, search_id: int) -> dict[str, float]:
    """Trial seconds summed by fate, over the candidates whose trial ended."""
    rows = session.execute(
        sa.select(Candidate.status, Candidate.stage, Candidate.reason, Candidate.seconds).where(
            Candidate.search_id == search_id,
            Candidate.status.in_(("trained", "rejected", "failed")),
            sa.or_(
                Candidate.status == "trained",
                Candidate.stage.in_(FUNNEL_STAGES[FUNNEL_STAGES.index("signal") :]),
            ),
        )
    )
    fates: dict[str, float] = {}
    for status_, stage, reason, seconds in rows:
        fate = fate_of(status_, stage, reason)
        fates[fate] = fates.get(fate, 0.0) + trial_seconds(seconds or {})
    return dict(sorted(fates.items(), key=lambda kv: -kv[1]))


def status(session: Session, name: str) -> dict[str, Any]:
    """Progress of a search: the counts by fate, the candidates stopped at each funnel
    stage, the best candidate by mean accuracy."""
    s = get_search(session, name)
    counts = _counts(session, s.id)
    stopped = dict.fromkeys(FUNNEL_STAGES, 0)
    for (st, stage), n in counts.items():
        if st in ("rejected", "duplicate", "failed") and stage in stopped:
            stopped[stage] += n

    def total(status: str) -> int:
        return sum(n for (st, _), n in counts.items() if st == status)

    rejected: dict[str, int] = {}
    for (st, stage), n in counts.items():
        if st == "rejected":
            rejected[stage or "unknown"] = rejected.get(stage or "unknown", 0) + n
    best = _best(session, s.id)
    screened, trained = sum(counts.values()), total("trained")
    # A search that is not running ended at its last write.
    end = datetime.now(UTC) if s.status == "running" else s.finished_at or s.updated_at
    elapsed = max((utc(end) - utc(s.created_at)).total_seconds(), 1e-9)
    worker_hours = s.worker_seconds / 3600
    return {
        "name": s.name,
        "space": s.space,
        "strategy": s.strategy,
        "status": s.status,
        "budget": s.budget,
        "screened": screened,
        "trained": trained,
        "queued": total("queued"),
        "running": total("running"),
        "failed": total("failed"),
        "duplicates": total("duplicate"),
        "rejected": dict(sorted(rejected.items())),
        "stopped_at": stopped,
        "front_size": session.scalar(
            sa.select(sa.func.count()).where(Candidate.search_id == s.id, Candidate.on_front)
        ),
        "best": None
        if best is None
        else {
            "id": best.id,
            "formula": best.formula,
            "mean_score": best.mean_score,
            "scores": best.scores,
        },
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
        "finished_at": iso(s.finished_at),
        # Since its creation (resumes included): screening rate, and the time left at the
        # training rate so far (None unless running with at least one trained).
        "elapsed_s": elapsed,
        "per_minute": 60.0 * screened / elapsed,
        "eta_s": (
            max(s.budget - trained, 0) * elapsed / trained
            if s.status == "running" and trained
            else None
        ),
        # Worker time (wall time x workers, over every sitting, as the driver last wrote
        # it), its budget, the trials' share of it by fate, and the yield per worker-hour.
        "worker_seconds": s.worker_seconds,
        "worker_hours_budget": (s.config or {}).get("worker_hours"),
        "worker_by_fate": worker_time_by_fate(session, s.id),
        "trained_per_worker_hour": trained / worker_hours if worker_hours > 0 else None,
        "after": _after_the_search(session, s.id),
    }


def _after_the_search(session: Session, search_id: int) -> dict[str, dict[str, int]]:
    """The stages after the search on its own candidates: per stage (``retune``,
    ``reevaluate``, ``transfer``) the layers and runs stored."""
    rows = session.execute(
        sa.select(
            Evaluation.stage, sa.func.count(sa.distinct(Evaluation.candidate_id)), sa.func.count()
        )
        .join(Candidate, Candidate.id == Evaluation.candidate_id)
        .where(Candidate.search_id == search_id, Evaluation.stage != "proxy")
        .group_by(Evaluation.stage)
    )
    return {stage: {"layers": layers, "runs": runs} for stage, layers, runs in rows}


def searches(session: Session) -> list[dict[str, Any]]:
    names = session.scalars(sa.select(Search.name).order_by(Search.id)).all()
    return [status(session, n) for n in names]


def funnel(session: Session, name: str) -> list[dict[str, Any]]:
    """Counts of the funnel's candidates by (status, stage, reason), largest first."""
    s = get_search(session, name)
    rows = session.execute(
        sa.select(Candidate.status, Candidate.stage, Candidate.reason, sa.func.count())
        .where(Candidate.search_id == s.id, Candidate.status != NAMED)
        .group_by(Candidate.status, Candidate.stage, Candidate.reason)
    )
    table = [
        {"status": st, "stage": stage, "reason": reason, "count": n}
        for st, stage, reason, n in rows
    ]
    return sorted(table, key=lambda r: (-r["count"], r["status"], r["stage"] or ""))


def best_so_far(session: Session, name: str) -> list[list[Any]]:
    """The best-so-far curve of a search: its trained candidates in the order they were
    born, each as [trained count, id, mean accuracy, best mean so far]."""
    s = get_search(session, name)
    rows = session.execute(
        sa.select(Candidate.id, Candidate.mean_score)
        .where(Candidate.search_id == s.id, Candidate.status == "trained")
        .order_by(Candidate.id)
    ).all()
    curve, best = [], None
    for n, (cid, mean) in enumerate(rows, start=1):
        if mean is not None and (best is None or mean > best):
            best = mean
        curve.append([n, cid, mean, best])
    return curve
