"""Re-evaluation before selection: a search's best layers trained again on its own proxy with
new seeds, and ranked by the mean.

A search scores each layer on one seed, and the top of its ranking is where lucky seeds
collect (the winner's curse): what goes on to transfer should be the best on average, not
the luckiest.  ``reevaluate NAME --top M --seeds S`` takes the M best trained candidates by
mean accuracy (FEC twins collapsed: one per function) and trains each with seeds
``search seed + 1 .. + S`` on the search's protocol, quality check included (a seed that
fails it scores 0 on the architectures it did not complete).  Each run is an evaluation
with stage ``reevaluate``; a rerun trains only the (layer, seed) pairs that are missing, so
more seeds can be added later.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evonorm_search.errors import StoreError
from evonorm_search.search.driver import SearchSettings, settings_space
from evonorm_search.search.units import Unit, run_units
from evonorm_search.space import SearchSpace
from evonorm_search.stats import mean_interval

__all__ = [
    "STAGE",
    "ReevaluationPlan",
    "plan_reevaluation",
    "reevaluation_ranking",
    "run_reevaluation",
]

STAGE = "reevaluate"
WORKER = "evonorm_search.search.reevaluate:reevaluate_trial"


@dataclass
class ReevaluationPlan:
    search: SearchSettings
    space: SearchSpace
    seeds: list[int]
    layers: list[dict[str, Any]]  # candidate dicts, best proxy mean first
    units: list[tuple[int, int]] = field(default_factory=list)  # (candidate, seed) missing


def _seed_runs(candidate: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    """A candidate's re-evaluation runs: seed -> architecture -> evaluation."""
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    for e in candidate["evaluations"]:
        if e["stage"] == STAGE:
            runs.setdefault(e["seed"], {})[e["architecture"]] = e
    return runs


def best_distinct(store: Any, name: str, top: int) -> list[dict[str, Any]]:
    """The ``top`` best trained candidates of ``name`` by mean accuracy, one per function
    (a later FEC twin of a better candidate is left out)."""
    seen, chosen = set(), []
    for c in store.top(name, k=max(4 * top, 50)):
        if c["functional_hash"] in seen:
            continue
        if c["functional_hash"] is not None:
            seen.add(c["functional_hash"])
        chosen.append(c)
        if len(chosen) == top:
            break
    return chosen


def plan_reevaluation(store: Any, name: str, *, top: int, seeds: int) -> ReevaluationPlan:
    """What ``reevaluate`` trains for the search ``name``: its ``top`` best distinct layers
    and, for each, the seeds it has no re-evaluation for yet."""
    if top < 1 or seeds < 1:
        raise ValueError("top and seeds must be >= 1")
    found = store.search(name)
    search = SearchSettings.from_config(
        {"name": name, "space": found["space"], **(found["config"] or {})}
    )
    layers = best_distinct(store, name, top)
    if not layers:
        raise StoreError(f"search {name!r} has no trained candidate to re-evaluate")
    new_seeds = [search.seed + k for k in range(1, seeds + 1)]
    plan = ReevaluationPlan(search, settings_space(search), new_seeds, layers)
    for c in layers:
        done = _seed_runs(store.candidate(c["id"]))
        plan.units += [(c["id"], seed) for seed in new_seeds if seed not in done]
    return plan


def reevaluate_trial(request: dict[str, Any], report_progress: Any = None) -> dict[str, Any]:
    """One (layer, seed) on a worker: the search's proxy training, every architecture."""
    import torch

    from evonorm_search.graph import LayerGraph
    from evonorm_search.provenance import code_version
    from evonorm_search.proxy.train import train_candidate
    from evonorm_search.search.trial import effective_space, trial_dataset, worker_node

    space = effective_space(request["space"], request["dataset"], request["preset"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = trial_dataset(space.proxy.dataset, request["data_dir"], space.proxy.validation, device)
    runs = train_candidate(
        LayerGraph.from_json(request["graph"]), data, space=space, seed=request["seed"]
    )
    evaluations = [
        {
            "architecture": r.architecture,
            "steps": r.steps,
            "status": r.status,
            "seconds": round(r.seconds, 3),
            "accuracy": r.accuracy,
            "loss": r.loss,
            "quality_accuracy": r.quality_accuracy,
        }
        for r in runs.values()
    ]
    return {"node": worker_node(), "code_version": code_version(), "evaluations": evaluations}


class _Reevaluation:
    """The units of a plan for ``run_units``; each finished unit is recorded at once."""

    def __init__(self, store: Any, plan: ReevaluationPlan, on_event: Any) -> None:
        self.store, self.plan, self.on_event = store, plan, on_event
        self.pending = list(plan.units)
        self.graphs = {c["id"]: c["graph"] for c in plan.layers}
        self.left = len(self.pending)

    def next_unit(self) -> Unit | None:
        if not self.pending:
            return None
        candidate, seed = self.pending.pop(0)
        s = self.plan.search
        return Unit(
            f"#{candidate} seed {seed}",
            WORKER,
            {
                "candidate": candidate,
                "seed": seed,
                "graph": self.graphs[candidate],
                "space": s.space,
                "dataset": s.dataset,
                "data_dir": s.data_dir,
                "preset": s.preset,
            },
        )

    def finished(self) -> bool:
        return not self.pending

    def progress(self, unit: Unit, progress: dict[str, Any]) -> None:
        pass

    def complete(self, unit: Unit, report: dict[str, Any]) -> None:
        r, space = unit.request, self.plan.space
        if "error" in report:
            self.on_event(f"{unit.label}: failed ({report['error']}); a rerun tries again")
            return
        with self.store.batch():
            for e in report["evaluations"]:
                self.store.add_evaluation(
                    r["candidate"],
                    dataset=space.proxy.dataset,
                    preset=space.proxy.preset,
                    seed=r["seed"],
                    stage=STAGE,
                    node=report.get("node"),
                    code_version=report.get("code_version"),
                    **e,
                )
        self.left -= 1
        runs = {e["architecture"]: e for e in report["evaluations"]}
        score = seed_score(runs, space.proxy.architectures)
        self.on_event(f"{unit.label}: mean {score:.4f}; {self.left} runs left")


def seed_score(runs: dict[str, dict[str, Any]], architectures: Sequence[str]) -> float:
    """One seed's score: the mean over the search's architectures, 0 for one not completed."""
    return statistics.fmean(
        (runs[a]["accuracy"] or 0.0) if a in runs and runs[a]["status"] == "completed" else 0.0
        for a in architectures
    )


def run_reevaluation(
    store: Any,
    plan: ReevaluationPlan,
    *,
    workers: int = 1,
    gpus_per_trial: float = 0.0,
    address: str | None = None,
    on_event: Any = None,
) -> int:
    """Train ``plan``'s missing units, recording each as it ends; returns how many are
    left (none unless interrupted or failed)."""
    source = _Reevaluation(store, plan, on_event or (lambda line: None))
    if plan.units:
        run_units(
            source,
            name="reevaluate",
            workers=workers,
            gpus_per_trial=gpus_per_trial,
            address=address,
        )
    return source.left


def reevaluation_ranking(
    store: Any, name: str, *, top: int | None = None, seeds: list[int] | None = None
) -> list[dict[str, Any]]:
    """The re-evaluated layers of the search ``name`` (among its ``top`` best distinct, all
    re-evaluated ones by default), best mean first: per layer the seeds, each seed's score,
    the mean with its 95% t-interval, and the search's own (one-seed) proxy mean.  Only the
    ``seeds`` given count, where given."""
    architectures = store.search(name)["architectures"]
    rows = []
    for c in best_distinct(store, name, top or 10**6):
        runs = _seed_runs(store.candidate(c["id"]))
        scores = {
            seed: seed_score(r, architectures)
            for seed, r in sorted(runs.items())
            if seeds is None or seed in seeds
        }
        if not scores:
            continue
        interval = mean_interval(list(scores.values()))
        rows.append(
            {
                "id": c["id"],
                "formula": c["formula"],
                "graph": c["graph"],
                "functional_hash": c["functional_hash"],
                "seeds": list(scores),
                "scores": scores,
                "mean": interval.mean,
                "low": interval.low,
                "high": interval.high,
                "proxy_mean": c["mean_score"],
            }
        )
    rows.sort(key=lambda r: (-r["mean"], r["id"]))
    return rows
