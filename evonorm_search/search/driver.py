"""The search driver: a strategy and the funnel behind a Ray Tune ``Searcher``.

The driver process is the database's only writer.  Screening (funnel stages 1-5) runs in
the searcher's ``suggest``: rejections and FEC hits are recorded without a trial; a
survivor becomes a trial, which runs on a Ray worker (``trial.run_trial``: the learning
signal, the quality check, full training and the compile stage) and returns a report that
``on_trial_complete`` records.  The budget counts candidates that complete full training;
``worker_hours`` (worker time over every sitting), ``max_candidates`` (screened) and
``time_limit`` (this sitting's wall time) stop a search before it (status ``exhausted``).

The database alone is enough to resume: the strategy replays the history and continues its
random stream, the funnel gets every structural hash seen, the worker time spent is read
back, and candidates left ``queued`` or ``running`` by a stopped driver are trained first,
under their own ids (so nothing is trained twice).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evonorm_search.graph import LayerGraph
from evonorm_search.hashing import FunctionalCache, proxy_key
from evonorm_search.rejection import Funnel
from evonorm_search.search.strategies import Proposal, Told, make_strategy
from evonorm_search.search.trial import COMPILE_ORDERS, TrialRequest, effective_space, run_trial
from evonorm_search.search.tuner import tune_run
from evonorm_search.space import SearchSpace
from evonorm_search.worker_time import fate_of, trial_seconds

__all__ = ["Progress", "SearchSettings", "check_data", "run_search"]


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``run`` fixes for a search (kept in the store, read back by ``resume``)."""

    name: str
    space: str = "evonorm_b"
    dataset: str = "digits"
    data_dir: str | None = None
    preset: str | None = None  # default: the space's
    budget: int = 20
    strategy: str = "evolution"
    population: int | None = None  # default: the space's
    tournament: int | None = None
    initial: str = "random"
    initial_mutants: float | None = None  # default: the space's
    start_after: int | None = None  # default: the space's (twice the tournament)
    objectives: tuple[str, ...] | None = None
    seed: int = 0
    workers: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_candidates: int | None = None  # screened, rejections included (default 100 x budget)
    time_limit: float | None = None  # seconds of this sitting's wall time
    worker_hours: float | None = None  # worker time (wall x workers) over every sitting
    verify: bool = True
    compile_order: str = "auto"  # trial.COMPILE_ORDERS
    signal_stage: bool = True  # the learning-signal stage rejects (it is measured anyway)
    address: str | None = None  # an existing Ray cluster
    max_failures: int = 2  # retries of a trial whose process died

    def __post_init__(self) -> None:
        if self.compile_order not in COMPILE_ORDERS:
            raise ValueError(
                f"unknown compile order {self.compile_order!r} (choose from "
                f"{', '.join(COMPILE_ORDERS)})"
            )
        if self.worker_hours is not None and not self.worker_hours > 0:
            raise ValueError(f"worker_hours must be > 0, got {self.worker_hours}")
        # Trials run in directories of their own, on other nodes too: a relative path
        # would not be found there.  (A space named without "/" or ".toml" is a shipped one.)
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", os.path.abspath(self.data_dir))
        if "/" in self.space or self.space.endswith(".toml"):
            object.__setattr__(self, "space", os.path.abspath(self.space))

    def to_config(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SearchSettings:
        known = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        if known.get("objectives") is not None:
            known["objectives"] = tuple(known["objectives"])
        return cls(**known)


@dataclass
class Progress:
    """What the live display shows; updated by the driver."""

    budget: int
    trained: int = 0
    screened: int = 0
    running: dict[str, int] = field(default_factory=dict)  # trial id -> candidate
    stages: dict[str, int] = field(default_factory=dict)  # fate "stage: status" -> count
    best: dict[str, float] = field(default_factory=dict)  # architecture -> best accuracy
    started: float = field(default_factory=time.monotonic)
    trained_now: int = 0  # since this driver started (the rate's numerator)
    workers: int = 1
    worker_seconds_before: float = 0.0  # worker time of earlier sittings
    worker_hours: float | None = None  # the budget, if any
    by_fate: dict[str, float] = field(default_factory=dict)  # fate -> trials' worker seconds
    evolving: bool = False
    stopped_reason: str | None = None  # why the search stopped before its budget

    def count(self, key: str) -> None:
        self.stages[key] = self.stages.get(key, 0) + 1

    @property
    def worker_seconds(self) -> float:
        """Over every sitting: this one's wall time x workers, plus the earlier ones'."""
        return self.worker_seconds_before + (time.monotonic() - self.started) * self.workers

    def spend(self, fate: str, seconds: float) -> None:
        self.by_fate[fate] = self.by_fate.get(fate, 0.0) + seconds


def check_data(dataset: str, data_dir: str | None) -> None:
    """Fail before a search starts, not in its first trial, when the data is missing."""
    from evonorm_search.proxy.data import CIFAR10_DIR, DataError, default_data_dir

    if dataset not in ("cifar10", "digits", "synthetic"):
        raise DataError(f"unknown dataset {dataset!r} (available: cifar10, digits, synthetic)")
    if dataset != "cifar10":
        return
    directory = Path(data_dir) if data_dir else default_data_dir() / CIFAR10_DIR
    needed = [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]
    missing = [n for n in needed if not (directory / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 data not found in {directory}: missing {', '.join(missing)} (see --data-dir)"
        )


def settings_space(settings: SearchSettings) -> SearchSpace:
    return effective_space(settings.space, settings.dataset, settings.preset)


class _Driver:
    def __init__(
        self,
        store: Any,
        settings: SearchSettings,
        space: SearchSpace,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        from evonorm_search.store import StoreFEC

        self.store, self.settings, self.space = store, settings, space
        self.architectures = tuple(space.proxy.architectures)
        self.on_progress = on_progress or (lambda p: None)
        self.strategy = make_strategy(
            settings.strategy,
            space,
            self.architectures,
            settings.seed,
            population=settings.population,
            tournament=settings.tournament,
            initial=settings.initial,
            initial_mutants=settings.initial_mutants,
            start_after=settings.start_after,
        )
        self.funnel = Funnel(
            space,
            cache=FunctionalCache(backend=StoreFEC(store)),
            seen=store.structural_hashes(settings.name),
        )
        self.progress = Progress(
            budget=settings.budget, workers=settings.workers, worker_hours=settings.worker_hours
        )
        self.requeued: list[dict[str, Any]] = []  # candidates to (re)train first
        # Scores of the trained candidates by structural hash: a structural duplicate's.
        self.trained_structures: dict[str, dict[str, float]] = {}
        self.trials: dict[str, tuple[int, Proposal | None, str | None]] = {}
        self.stopped_reason: str | None = None

    # -- resuming --------------------------------------------------------------------------
    def restore(self) -> None:
        search = self.store.search(self.settings.name)
        self.progress.worker_seconds_before = search["worker_seconds"] or 0.0
        if search["strategy_state"]:
            self.strategy.continue_from(search["strategy_state"])
        history = []
        for c in self.store.history(self.settings.name):
            if c["graph"] is not None:
                scores = c["scores"] if c["status"] == "trained" else None
                initial = (c["mutation"] or "").startswith("initial")
                history.append(Told(c["id"], LayerGraph.from_json(c["graph"]), scores, initial))
            if c["status"] in ("queued", "running"):  # stopped before its trial ended
                self.requeued.append(c)
                self.progress.screened += 1
                if c["functional_hash"]:
                    self.funnel.hold(c["functional_hash"], str(c["id"]))
                continue
            self._tally(c["status"], c["stage"])
            if c["status"] == "trained":
                self._best(c["scores"])
                self.trained_structures[history[-1].graph.structural_hash()] = c["scores"]
        self.strategy.restore(history)
        self.progress.by_fate = dict(self.store.status(self.settings.name)["worker_by_fate"])
        self.progress.evolving = getattr(self.strategy, "evolving", False)

    def _best(self, scores: dict[str, float]) -> None:
        for a, value in scores.items():
            self.progress.best[a] = max(value, self.progress.best.get(a, 0.0))

    def _tally(self, status: str, stage: str | None, *, screened: bool = True) -> None:
        self.progress.screened += screened
        if status == "trained":
            self.progress.trained += 1
        self.progress.count(f"{stage or 'screening'}: {status}")

    # -- the searcher's side ---------------------------------------------------------------
    def finished(self) -> bool:
        s, p = self.settings, self.progress
        if p.trained >= s.budget:
            return True
        # Re-queued candidates were screened already: training them screens nothing new.
        if p.screened >= (s.max_candidates or 100 * s.budget) and not self.requeued:
            self.stopped_reason = f"{p.screened} candidates screened (--max-candidates)"
        elif s.time_limit is not None and time.monotonic() - p.started > s.time_limit:
            self.stopped_reason = f"time limit of {s.time_limit:g} s reached"
        elif s.worker_hours is not None and p.worker_seconds >= s.worker_hours * 3600:
            self.stopped_reason = (
                f"worker-time budget of {s.worker_hours:g} h reached "
                f"({p.worker_seconds / 3600:.2f} h spent)"
            )
        elif self.strategy.exhausted and not self.requeued:  # the zoo's: all proposed
            self.stopped_reason = "the strategy has nothing more to propose"
        return self.stopped_reason is not None

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next trial's config, after screening as many proposals as it takes; None
        while enough trials are in flight to meet the budget."""
        if self.progress.trained + len(self.trials) >= self.settings.budget:
            return None
        if self.requeued:
            c = self.requeued.pop(0)
            return self._start(trial_id, c["id"], None, c["graph"], c.get("functional_hash"))
        while not self.finished():
            proposal = self.strategy.ask()
            # Saved before the proposal is recorded: a driver killed in between loses the
            # proposal, and a resume never proposes it again.
            self.store.set_search_progress(
                self.settings.name,
                strategy_state=self.strategy.random_state(),
                worker_seconds=self.progress.worker_seconds,
            )
            screening = self.funnel.screen(proposal.graph)
            candidate = self.store.record_screening(
                self.settings.name, screening, parent=proposal.parent, mutation=proposal.mutation
            )
            fate = screening.fate
            if fate.passed:
                self.progress.screened += 1
                return self._start(
                    trial_id,
                    candidate,
                    proposal,
                    screening.graph.to_json(),
                    screening.functional_hash,
                )
            self._tally(
                "duplicate" if fate.stage in ("duplicate", "functional") else "rejected", fate.stage
            )
            # A duplicate of a trained candidate (an FEC hit, or the same structure) may join
            # the population with its twin's fitness; it is no trial.  (Told as a failure,
            # Optuna's samplers propose the same genome again and again.)
            scores = (
                screening.fitness.scores
                if screening.fitness
                else self.trained_structures.get(screening.structural_hash or "")
            )
            self.strategy.tell(proposal, candidate, scores)
            self.progress.evolving = getattr(self.strategy, "evolving", False)
            self.on_progress(self.progress)
        return None

    def _start(
        self,
        trial_id: str,
        candidate: int,
        proposal: Proposal | None,
        graph: str,
        functional_hash: str | None,
    ) -> dict[str, Any]:
        self.store.update_candidate(candidate, status="running", stage="trial")
        self.trials[trial_id] = (candidate, proposal, functional_hash)
        self.progress.running[trial_id] = candidate
        self.on_progress(self.progress)
        s = self.settings
        request = TrialRequest(
            candidate,
            graph,
            s.space,
            s.dataset,
            s.data_dir,
            s.preset,
            s.seed,
            s.verify,
            s.compile_order,
            s.signal_stage,
        )
        return {"request": request.to_dict(), "preset": self.space.proxy.preset}

    def complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        candidate, proposal, functional_hash = self.trials.pop(trial_id)
        self.progress.running.pop(trial_id, None)
        report = json.loads(result["report"]) if result and "report" in result else None
        if error or report is None:
            attempts = self.settings.max_failures + 1
            self.store.update_candidate(
                candidate,
                status="failed",
                stage="trial",
                reason=f"the trial failed ({attempts} attempt"
                f"{'s' * (attempts > 1)}: its process died or "
                "raised)",
            )
            self._tally("failed", "trial", screened=False)
            self._finish(proposal, candidate, None, functional_hash)
            return
        self._record(candidate, report)
        scores = report.get("scores")
        self._tally(report["status"], report.get("stage") or "training", screened=False)
        self.progress.spend(
            fate_of(report["status"], report.get("stage"), report.get("reason")),
            trial_seconds(report["seconds"]),
        )
        self._finish(proposal, candidate, scores, functional_hash)

    def _record(self, candidate: int, report: dict[str, Any]) -> None:
        s = self.settings
        with self.store.batch():
            for e in report.get("evaluations", []):
                self.store.add_evaluation(
                    candidate,
                    dataset=s.dataset,
                    preset=self.space.proxy.preset,
                    seed=s.seed,
                    node=report["node"],
                    code_version=report.get("code_version"),
                    **e,
                )
            compiled = report.get("compiled")
            self.store.update_candidate(
                candidate,
                compiled=compiled,
                seconds=report["seconds"],
                measured={"signal": report["signal"]} if "signal" in report else None,
                bytes_per_element=(
                    compiled["traffic_fwd"] + compiled["traffic_bwd"] if compiled else None
                ),
                **(
                    {}
                    if report["status"] == "trained"
                    else {
                        "status": report["status"],
                        "stage": report["stage"],
                        "reason": report["reason"],
                        "detail": report.get("detail"),
                    }
                ),
            )
            if report["status"] == "trained":
                self.store.set_fitness(candidate, report["scores"])

    def _finish(
        self,
        proposal: Proposal | None,
        candidate: int,
        scores: dict[str, float] | None,
        functional_hash: str | None,
    ) -> None:
        if functional_hash:
            self.funnel.release(functional_hash)
        graph = (
            proposal.graph
            if proposal is not None
            # re-queued by a resume
            else LayerGraph.from_json(self.store.candidate(candidate)["graph"])
        )
        if scores:
            self.progress.trained_now += 1
            self._best(scores)
            self.trained_structures[graph.structural_hash()] = scores
        if proposal is not None:
            self.strategy.tell(proposal, candidate, scores)
        elif scores:
            self.strategy.restore([Told(candidate, graph, scores)])
        self.progress.evolving = getattr(self.strategy, "evolving", False)
        self.save_worker_time()
        self.on_progress(self.progress)

    def save_worker_time(self) -> None:
        self.store.set_search_progress(
            self.settings.name, worker_seconds=self.progress.worker_seconds
        )


# A failed trial's error: its first REASON_CHARACTERS as the reason (the funnel's tables
# group by it), the whole message, up to MAX_DETAIL characters, as the detail.
REASON_CHARACTERS = 300
MAX_DETAIL = 20_000


def failure_reason(message: str) -> str:
    """``message`` cut to REASON_CHARACTERS, saying how long it was where it is cut."""
    if len(message) <= REASON_CHARACTERS:
        return message
    return f"{message[:REASON_CHARACTERS]}… ({len(message):,} characters; the detail has them)"


def _trainable(config: dict[str, Any]) -> None:
    """One trial on a worker.  An exception is the candidate's fate (failed, with the
    error as its reason), not a reason to retry: only a process that died is retried."""
    from ray import tune

    try:
        report = run_trial(config["request"])
    except Exception as e:
        message = " ".join(f"{type(e).__name__}: {e}".split())
        report = {
            "status": "failed",
            "stage": "trial",
            "reason": failure_reason(message),
            "detail": message[:MAX_DETAIL],
            "seconds": {},
        }
    tune.report({"report": json.dumps(report)})


def run_search(
    store: Any,
    settings: SearchSettings,
    *,
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> str:
    """Run (or resume) the search ``settings.name`` to its budget on Ray Tune; returns the
    search's final status (``completed``, ``exhausted``, ``stopped``)."""
    check_data(settings.dataset, settings.data_dir)
    if importlib.util.find_spec("triton") is not None:  # trials compile kernels into it
        from evonorm_search.codegen.runtime import private_cache_dir

        private_cache_dir()
    # Ray Tune's console reporter: the live view and the store do that.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    space = settings_space(settings)
    if not resume:
        store.create_search(
            settings.name,
            space=settings.space,
            strategy=settings.strategy,
            seed=settings.seed,
            budget=settings.budget,
            architectures=space.proxy.architectures,
            proxy_key=proxy_key(space),
            objectives=settings.objectives,
            config=settings.to_config(),
        )
    else:
        store.set_search_status(settings.name, "running")
        # A resume may change some settings (workers, budgets): the record says what ran;
        # what other commands keep there (the search's transfer) stays.
        kept = {
            k: v
            for k, v in (store.search(settings.name)["config"] or {}).items()
            if k not in SearchSettings.__dataclass_fields__
        }
        store.set_search_config(settings.name, {**kept, **settings.to_config()})
    driver = _Driver(store, settings, space, on_progress)
    if resume:
        driver.restore()
        if driver.finished():  # e.g. its worker-time budget is spent: no Ray, no trial
            return _stop(store, driver, interrupted=False)

    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    if tune_run(
        _trainable,
        driver,
        name="trials",
        scratch_prefix="evonorm-tune-",
        workers=settings.workers,
        resources=resources,
        cpus=max(1, int(settings.workers * settings.cpus_per_trial)),
        max_failures=settings.max_failures,
        address=settings.address,
    ):
        return _stop(store, driver, interrupted=True)
    return _stop(store, driver, interrupted=False)


def _stop(store: Any, driver: _Driver, *, interrupted: bool) -> str:
    """Record how the search ended: its worker time, its in-flight candidates queued again
    (a resume trains them), its status, which it returns."""
    if interrupted:
        driver.stopped_reason = "interrupted"
    ended = driver.stopped_reason is not None and not interrupted
    status = (
        "completed"
        if driver.progress.trained >= driver.settings.budget
        else "exhausted"
        if ended
        else "stopped"
    )
    driver.save_worker_time()
    for candidate, _, _ in driver.trials.values():  # cancelled in flight: trained on resume
        store.update_candidate(
            candidate, status="queued", stage="trial", reason="interrupted; resume trains it"
        )
    store.set_search_status(driver.settings.name, status)
    driver.progress.stopped_reason = driver.stopped_reason
    driver.on_progress(driver.progress)
    return status
