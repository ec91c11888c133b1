"""Read queries over the store: searches, status, funnel, Pareto front, lineage, top-k.

Every function takes a SQLAlchemy ``Session`` and returns plain data (dicts, lists), the
shape the CLI prints as JSON and the dashboard serves, so that both say the same thing.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from evonorm_search import baselines
from evonorm_search.errors import NotFoundError, StoreError
from evonorm_search.pareto import non_dominated
from evonorm_search.store.models import NAMED, Candidate, Evaluation, FECEntry, Search
from evonorm_search.worker_time import fate_of, trial_seconds

__all__ = [
    "BASELINE_STRATEGY",
    "DERIVED_OBJECTIVES",
    "RETUNE_KEY",
    "baseline_layers",
    "best_so_far",
    "candidate",
    "candidate_dict",
    "funnel",
    "get_search",
    "lineage",
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


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC."""
    if value is None:
        return None
    return _utc(value).isoformat()


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
        "created_at": _iso(s.created_at),
        "updated_at": _iso(s.updated_at),
        "finished_at": _iso(s.finished_at),
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
        "created_at": _iso(c.created_at),
        "updated_at": _iso(c.updated_at),
    }


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
    elapsed = max((_utc(end) - _utc(s.created_at)).total_seconds(), 1e-9)
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
        "created_at": _iso(s.created_at),
        "updated_at": _iso(s.updated_at),
        "finished_at": _iso(s.finished_at),
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
