"""Search strategies at the same budget, and where a real search's time goes.

    python benchmarks/search.py compare [--budget 12] [--seeds 3] [--workers 2]
        [--strategies evolution,random,tpe,nsga2] [--plot benchmarks/results/search.png]
    python benchmarks/search.py profile [--budget 8] [--workers 2]
    python benchmarks/search.py yield [--worker-minutes 16] [--repeats 2] [--workers 2]
        [--starts zoo,random] [--configs today,new] [--data-dir DIR]

``compare`` runs every strategy once per seed with the same budget of trained candidates,
the same funnel and one database, on a short proxy (``benchmarks/strategies.toml``: EvoNorm-B's
ops in a 6-node genome, two architectures, 120 steps on the digits, kernels compiled but not
verified).  Evolution starts from a random population like the others.  It prints the
best-found accuracy per architecture after the budget (mean and std over seeds) with the
trials it took, and plots best-found against trained candidates.

``yield`` measures how many candidates a search trains per worker-hour on the default
protocol (``evonorm_b`` on CIFAR-10, the tiny preset, kernels verified), at a fixed worker-time
budget per run (``--worker-minutes``: the product's ``--worker-hours``, counted by the store
across interruptions), from the zoo (``--initial baselines``) and from a random start,
``--repeats`` seeds each, for each configuration (``today``: the search before the yield
issue, as settings of the product; ``new``: the defaults), every run in a database of its own
(so that no run reuses another's FEC).  Per run it prints trained, trained per worker-hour,
screened, whether evolution started (and when: the first tournament child's time since the
search began), the share of worker time by final fate (trained, rejected at each stage,
diverged, failed) and by stage (compile, signal, quality check, full training, orchestration:
the rest), then the mean and spread over the repeats and the ratio of the configurations.
``--data-dir`` (default ``../shared/data/cifar-10-batches-py``) holds CIFAR-10.

``profile`` runs the docs' main job (evonorm_b on the digits, the zoo as the initial
population, kernels verified) and prints its funnel (the share of screened candidates stopped
at each stage, compile included; the FEC hit rate) and where the time went: the share of
worker time (workers x wall time) spent training, in the compile stage, and on neither
(orchestration: Ray scheduling, worker start-up, data loading, slots idle while the driver
screens or records), and the driver's screening time.

Searches go to one database (``--db``, default ``benchmarks/results/search.db``); a search
already there is reused, or resumed where it stopped, so an interrupted benchmark continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from evonorm_search.search.driver import SearchSettings, run_search, settings_space
from evonorm_search.store import Store
from evonorm_search.store.queries.funnel import FUNNEL_STAGES
from evonorm_search.worker_time import TRIAL_STAGES

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGY_SPACE = str(Path(__file__).resolve().parent / "strategies.toml")


def compare_settings(strategy: str, seed: int, args: argparse.Namespace) -> SearchSettings:
    return SearchSettings(
        name=f"{strategy}-b{args.budget}-s{seed}",
        space=STRATEGY_SPACE,
        dataset="digits",
        budget=args.budget,
        strategy=strategy,
        seed=seed,
        workers=args.workers,
        verify=False,
    )


def profile_settings(args: argparse.Namespace) -> SearchSettings:
    """The docs' main job (README.md, docs/index.md)."""
    return SearchSettings(
        name=f"main-b{args.budget}",
        space="evonorm_b",
        dataset="digits",
        budget=args.budget,
        population=6,
        initial="baselines",
        workers=args.workers,
    )


def run_all(
    store: Store, searches: list[SearchSettings], timings: dict[str, float], timings_path: Path
) -> None:
    """Run (or resume) every search that has not ended; wall times accumulate in
    ``timings`` (kept beside the database, for a benchmark that was interrupted)."""
    import ray

    existing = {s["name"]: s for s in store.searches()}
    ended = {n for n, s in existing.items() if s["status"] in ("completed", "exhausted")}
    todo = [s for s in searches if s.name not in ended]
    if not todo:
        return
    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=max(s.workers for s in todo),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    print(f"ray.init: {time.perf_counter() - start:.1f} s (once per search from the CLI)")
    for settings in todo:
        start = time.perf_counter()
        status = run_search(store, settings, resume=settings.name in existing)
        name = settings.name
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        timings_path.write_text(json.dumps(timings, indent=1))
        s = store.status(name)
        print(
            f"{name}: {status}, {s['trained']} trained of {s['screened']} screened in "
            f"{timings[name]:.0f} s",
            flush=True,
        )
    ray.shutdown()


def best_found(store: Store, name: str, architectures: list[str]) -> list[list[float]]:
    """Per trained candidate (in birth order), the best accuracy so far per architecture."""
    best, curve = [0.0] * len(architectures), []
    for c in store.history(name):
        if c["status"] == "trained":
            best = [max(b, c["scores"][a]) for b, a in zip(best, architectures, strict=True)]
            curve.append(list(best))
    return curve


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def compare(store: Store, args: argparse.Namespace, searches: list[SearchSettings]) -> None:
    architectures = list(settings_space(searches[0]).proxy.architectures)
    print(
        f"\nbest-found validation accuracy after {args.budget} trained candidates, "
        f"mean ± std over {args.seeds} seeds"
    )
    header = " ".join(f"{a:>13}" for a in architectures)
    print(f"{'strategy':<10} {header} {'mean':>13} {'screened':>9} {'trials':>7}")
    curves = {}
    for strategy in args.strategies:
        names = [s.name for s in searches if s.strategy == strategy]
        runs = [best_found(store, n, architectures) for n in names]
        curves[strategy] = runs
        finals = [run[-1] for run in runs]
        columns = [mean_std([f[i] for f in finals]) for i in range(len(architectures))]
        means = mean_std([statistics.mean(f) for f in finals])
        statuses = [store.status(n) for n in names]
        screened = statistics.mean(s["screened"] for s in statuses)
        trials = statistics.mean(
            s["trained"]
            + s["stopped_at"]["compile"]
            + s["stopped_at"]["quality"]
            + s["stopped_at"]["trial"]
            for s in statuses
        )
        print(
            f"{strategy:<10} {' '.join(f'{c:>13}' for c in columns)} {means:>13} "
            f"{screened:9.0f} {trials:7.1f}"
        )
    if args.plot:
        plot(curves, architectures, Path(args.plot))


def plot(curves: dict[str, list[list[list[float]]]], architectures: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(
        1, len(architectures), figsize=(4 * len(architectures), 3.4), sharex=True
    )
    for strategy, runs in curves.items():
        length = min(len(r) for r in runs)
        values = np.array([r[:length] for r in runs])  # seeds x trained x architectures
        x = np.arange(1, length + 1)
        for i, ax in enumerate(np.atleast_1d(axes)):
            mean = values[:, :, i].mean(axis=0)
            (line,) = ax.plot(x, mean, label=strategy)
            ax.fill_between(
                x,
                values[:, :, i].min(axis=0),
                values[:, :, i].max(axis=0),
                color=line.get_color(),
                alpha=0.15,
            )
            ax.set_title(architectures[i])
            ax.set_xlabel("trained candidates")
    np.atleast_1d(axes)[0].set_ylabel("best validation accuracy")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def funnel(store: Store, names: list[str]) -> None:
    statuses = [store.status(n) for n in names]
    screened = sum(s["screened"] for s in statuses)
    print(f"\nfunnel of all {len(names)} runs: {screened} candidates screened")
    for stage in FUNNEL_STAGES:
        stopped = sum(s["stopped_at"][stage] for s in statuses)
        print(f"  stopped at {stage:<10} {stopped:6d}  {stopped / screened:6.1%}")
    trained = sum(s["trained"] for s in statuses)
    print(f"  trained               {trained:6d}  {trained / screened:6.1%}")
    fec = sum(s["stopped_at"]["functional"] for s in statuses)
    print(
        f"FEC hit rate: {fec / screened:.1%} of screened candidates ({fec}) had the "
        f"function of an earlier one under another structure"
    )


def time_shares(store: Store, names: list[str], timings: dict[str, float], workers: int) -> None:
    totals: dict[str, float] = {}
    for name in names:
        for c in store.history(name):
            for stage, seconds in store.candidate(c["id"])["seconds"].items():
                totals[stage] = totals.get(stage, 0.0) + seconds
    wall = sum(timings.get(n, 0.0) for n in names)
    if not wall:
        return
    slots = workers * wall
    compiling = totals.pop("compile", 0.0)
    training = sum(totals.pop(stage, 0.0) for stage in TRIAL_STAGES if stage != "compile")
    screening = sum(totals.values())
    other = slots - training - compiling
    print(f"\ntime: {wall:.0f} s of wall time, {workers} workers: {slots:.0f} s of worker time")
    print(f"  training        {training:8.0f} s  {training / slots:6.1%} of worker time")
    print(f"  compile stage   {compiling:8.0f} s  {compiling / slots:6.1%} of worker time")
    print(f"  orchestration   {other:8.0f} s  {other / slots:6.1%} of worker time")
    print(
        f"  screening       {screening:8.0f} s  {screening / wall:6.1%} of the driver's "
        f"wall time ({', '.join(f'{k} {v:.0f} s' for k, v in sorted(totals.items()))})"
    )


# -- yield: trained candidates per worker-hour ---------------------------------------------

YIELD = RESULTS / "yield"
# (the start's label, evolution's initial population)
STARTS = {"zoo": "baselines", "random": "random"}
# The configurations compared, as the product's own settings.  "today": the search as it was
# before the yield issue (compile before training, no learning-signal stage, the initial
# population random graphs only, evolution once the population of 32 is full); "new": the
# defaults.
CONFIGS = {
    "today": {
        "compile_order": "first",
        "signal_stage": False,
        "initial_mutants": 0.0,
        "start_after": 32,
    },
    "new": {},
}


def yield_settings(config: str, start: str, seed: int, args: argparse.Namespace) -> SearchSettings:
    """A run of ``config`` on the default protocol; the budget of trained candidates is out
    of reach, so the worker-time budget ends it (status ``exhausted``)."""
    return SearchSettings(
        name=f"{config}-{start}-s{seed}",
        space="evonorm_b",
        dataset="cifar10",
        data_dir=args.data_dir,
        budget=10_000,
        initial=STARTS[start],
        seed=seed,
        workers=args.workers,
        max_candidates=10**9,
        worker_hours=args.worker_minutes / 60,
        **CONFIGS[config],
    )


def run_yield(settings: SearchSettings, args: argparse.Namespace) -> Path:
    """Run (or resume) one yield run in its own database until its worker-time budget,
    which the store counts across interruptions, is spent."""
    import ray

    database = Path(args.out) / f"{settings.name}.db"
    with Store(f"sqlite:///{database}") as store:
        existing = {s["name"]: s["status"] for s in store.searches()}
        if existing.get(settings.name) == "exhausted":
            return database
        if not ray.is_initialized():
            ray.init(
                address="local",
                num_cpus=settings.workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        run_search(store, settings, resume=settings.name in existing)
    return database


def yield_figures(database: Path, name: str) -> dict:
    """One run's figures, from its database."""
    from datetime import datetime

    with Store(f"sqlite:///{database}", readonly=True) as store:
        search = store.search(name)
        status = store.status(name)
        worker_s = status["worker_seconds"]
        stages = dict.fromkeys(("compile", "signal", "quality", "training"), 0.0)
        first_child = None
        began = datetime.fromisoformat(search["created_at"])
        for c in store.history(name):
            record = store.candidate(c["id"])
            for stage in stages:
                stages[stage] += float(record["seconds"].get(stage) or 0.0)
            evolved = c["parent"] is not None and not (c["mutation"] or "").startswith("initial")
            if evolved and first_child is None:
                first_child = datetime.fromisoformat(record["created_at"]) - began
    stages["orchestration"] = worker_s - sum(stages.values())
    return {
        "name": name,
        "worker_s": worker_s,
        "trained": status["trained"],
        "per_worker_hour": status["trained_per_worker_hour"] or 0.0,
        "screened": status["screened"],
        "fates": status["worker_by_fate"],
        "stages": stages,
        "evolution_after_s": (None if first_child is None else first_child.total_seconds()),
    }


FATES = (
    "trained",
    "rejected at signal",
    "rejected at quality",
    "rejected at compile",
    "diverged",
    "failed",
)
STAGES = ("compile", "signal", "quality", "training", "orchestration")


def _wasted(r: dict) -> float:
    """The share of worker time on candidates that ended rejected, diverged or failed."""
    return sum(v for fate, v in r["fates"].items() if fate != "trained") / r["worker_s"]


def report_yield(runs: list[dict]) -> None:
    print("\nper run (shares of worker time)")
    print(
        f"{'run':<18} {'w-min':>6} {'trained':>7} {'/ w-h':>6} {'screened':>8} "
        f"{'evolution':>10} "
        + " ".join(f"{f:>11.11}" for f in FATES)
        + " "
        + " ".join(f"{s:>11.11}" for s in STAGES)
    )
    for r in runs:
        evolution = (
            "no" if r["evolution_after_s"] is None else f"{r['evolution_after_s'] / 60:.1f} min"
        )
        print(
            f"{r['name']:<18} {r['worker_s'] / 60:6.1f} {r['trained']:7d} "
            f"{r['per_worker_hour']:6.1f} {r['screened']:8d} {evolution:>10} "
            + " ".join(f"{r['fates'].get(f, 0.0) / r['worker_s']:11.1%}" for f in FATES)
            + " "
            + " ".join(f"{r['stages'][s] / r['worker_s']:11.1%}" for s in STAGES)
        )

    def spread(values: list[float], form: str) -> str:
        return (
            f"{format(statistics.mean(values), form)} "
            f"[{format(min(values), form)}, {format(max(values), form)}]"
        )

    print("\nmean [min, max] over repeats")
    means: dict[tuple[str, str], float] = {}
    for config in CONFIGS:
        for start in STARTS:
            group = [r for r in runs if r["name"].startswith(f"{config}-{start}-")]
            if not group:
                continue
            rates = [r["per_worker_hour"] for r in group]
            means[config, start] = statistics.mean(rates)
            print(
                f"{config}, from {start} ({len(group)} runs): trained "
                f"{spread([r['trained'] for r in group], '.1f')}, per worker-hour "
                f"{spread(rates, '.1f')}, worker time on rejected, diverged or failed "
                f"{spread([_wasted(r) for r in group], '.0%')}, evolution started in "
                f"{sum(r['evolution_after_s'] is not None for r in group)} of {len(group)}"
            )
    for start in STARTS:
        if ("today", start) not in means or ("new", start) not in means:
            continue
        if means["today", start]:
            ratio = means["new", start] / means["today", start]
            print(f"from {start}: new / today = {ratio:.1f}x trained per worker-hour")
        else:
            print(
                f"from {start}: today trained nothing; new {means['new', start]:.1f} per "
                f"worker-hour"
            )


def yield_main(args: argparse.Namespace) -> None:
    from evonorm_search.search.driver import check_data

    check_data("cifar10", args.data_dir)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(
        f"{args.worker_minutes:g} worker-minutes per run, {args.workers} workers; "
        f"databases in {args.out}"
    )
    runs = []
    for seed in range(args.repeats):
        for start in args.starts:
            for config in args.configs:
                settings = yield_settings(config, start, seed, args)
                database = run_yield(settings, args)
                runs.append(yield_figures(database, settings.name))
                r = runs[-1]
                print(
                    f"{r['name']}: {r['trained']} trained, {r['screened']} screened in "
                    f"{r['worker_s'] / 60:.1f} worker-minutes",
                    flush=True,
                )
    report_yield(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["compare", "profile", "yield"])
    parser.add_argument("--budget", type=int, default=None, help="compare 12, profile 8")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--strategies", type=lambda s: s.split(","), default=["evolution", "random", "tpe", "nsga2"]
    )
    parser.add_argument("--db", default=f"sqlite:///{RESULTS / 'search.db'}")
    parser.add_argument("--plot", default=str(RESULTS / "search.png"))
    parser.add_argument("--worker-minutes", type=float, default=16.0, help="yield: per run")
    parser.add_argument("--repeats", type=int, default=2, help="yield: seeds per start")
    parser.add_argument("--out", default=str(YIELD), help="yield: the runs' databases")
    parser.add_argument(
        "--starts", type=lambda s: s.split(","), default=list(STARTS), help="yield: zoo, random"
    )
    parser.add_argument(
        "--configs", type=lambda s: s.split(","), default=list(CONFIGS), help="yield: today, new"
    )
    parser.add_argument(
        "--data-dir",
        default=str(
            Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"
        ),
        help="yield: CIFAR-10's files",
    )
    args = parser.parse_args()
    if args.part == "yield":
        yield_main(args)
        return
    args.budget = args.budget or (12 if args.part == "compare" else 8)
    RESULTS.mkdir(exist_ok=True)
    # Wall times live beside the database they belong to.
    database = args.db.removeprefix("sqlite:///")
    timings_path = (
        Path(database + ".timings.json") if database != args.db else RESULTS / "search-timings.json"
    )
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    store = Store(args.db)
    if args.part == "compare":
        searches = [
            compare_settings(strategy, seed, args)
            for seed in range(args.seeds)
            for strategy in args.strategies
        ]
    else:
        searches = [profile_settings(args)]
    run_all(store, searches, timings, timings_path)
    names = [s.name for s in searches]
    if args.part == "compare":
        compare(store, args, searches)
    funnel(store, names)
    time_shares(store, names, timings, args.workers)


if __name__ == "__main__":
    main()
