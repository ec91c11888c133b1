"""Evolution against random search at equal worker time, from the same start (issue 23,
item 3; docs/real-search.md).

    python benchmarks/evolution_vs_random.py search [--seeds 0,1,2] [--worker-hours 1]
        [--workers 2] [--data-dir DIR]
    python benchmarks/evolution_vs_random.py reevaluate [--processes 2] [--data-dir DIR]
    python benchmarks/evolution_vs_random.py report [--plot docs/real-search/strategies.png]

``search``: per seed, an evolution and a random search on the default protocol (``evonorm_b``
on CIFAR-10, the tiny preset), both from the zoo (``--initial baselines``), bounded by worker
time only (``--worker-hours``, counted by the store), each in a database of its own under
``runs/strategies/`` (not committed).  A run is one unit (about half an hour of wall time on
2 workers): one cut off by the end of a sitting starts over, since its timeline reads wall
clocks that do not see the gap.  When a run ends, its timeline is appended to
``benchmarks/data/real_search/strategies.jsonl`` (committed): the search's figures and, per
trained candidate, its formula, graph, mutation, proxy scores and the worker time at which it
finished (wall time since the search began x workers); and the search's ``evonorm-search
report``, as Markdown with its figures, to ``docs/real-search/searches/NAME.md``.

``reevaluate``: at each mark (a quarter, a half, three quarters and all of the worker-time
budget) the best layer found by then, by its proxy score, is trained again on the proxy with
two new seeds (the search's seed + 1 and + 2, as ``evonorm-search reevaluate`` does, through
its trial), appended to ``strategies_reevaluated.jsonl``: what each strategy would hand on
to transfer if stopped there, scored on seeds that chose nothing.

``report``: per strategy and mark, the re-evaluated accuracy (mean over the two new seeds and
the three networks) of the best layer found by then, its mean with a 95% t-interval over
search seeds; the paired difference evolution minus random per search seed; trained layers
per worker-hour; and the plot of both against worker-hours.
"""

from __future__ import annotations

import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import study  # benchmarks/: the script's own folder

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "real_search"
RUNS = DATA / "strategies.jsonl"
REEVALUATED = DATA / "strategies_reevaluated.jsonl"
DATABASES = HERE.parent / "runs" / "strategies"
REPORTS = HERE.parent / "docs" / "real-search" / "searches"
STRATEGIES = ("evolution", "random")
MARKS = (0.25, 0.5, 0.75, 1.0)
NEW_SEEDS = (1, 2)  # added to the search's seed


def run_key(row: dict) -> tuple[str, int]:
    return row["strategy"], row["seed"]


def search(seeds: list[int], worker_hours: float, workers: int, data_dir: str) -> None:
    """Each missing run to its worker-time budget, then its timeline to the data file."""
    import ray

    from evonorm_search.report import write_report
    from evonorm_search.search.driver import SearchSettings, run_search
    from evonorm_search.store import Store

    done = study.done(RUNS, run_key, repair=True)
    DATABASES.mkdir(parents=True, exist_ok=True)
    REPORTS.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for strategy in STRATEGIES:
            if (strategy, seed) in done:
                continue
            name = f"{strategy}-s{seed}"
            settings = SearchSettings(
                name=name,
                space="evonorm_b",
                dataset="cifar10",
                data_dir=data_dir,
                strategy=strategy,
                initial="baselines",
                seed=seed,
                budget=10_000,
                max_candidates=10**9,
                workers=workers,
                worker_hours=worker_hours,
            )
            database = DATABASES / f"{name}.db"
            if database.exists():
                # A run cut off by an earlier sitting: the store counts its worker time, but
                # not when in it each candidate finished (the timeline reads wall clocks, and
                # the gap between sittings is not stored), so it starts over.
                print(
                    f"{name}: an unfinished run from an earlier process: starting it over",
                    flush=True,
                )
                database.unlink()
            url = f"sqlite:///{database}"
            print(f"{name}: {worker_hours} worker-hours on {workers} workers, {url}", flush=True)
            with Store(url) as store:
                if not ray.is_initialized():
                    ray.init(
                        address="local",
                        num_cpus=workers,
                        include_dashboard=False,
                        log_to_driver=False,
                        configure_logging=False,
                    )
                status = run_search(store, settings)
                if status != "exhausted":
                    sys.exit(f"{name} ended {status}: run the command again to start it over")
                row = _timeline(store, name, strategy, seed, worker_hours, workers)
                # The database is not kept: its report is (item 5).
                write_report(store, name, REPORTS / f"{name}.md", top=5)
            with RUNS.open("a") as out:
                out.write(json.dumps(row, sort_keys=True) + "\n")
            print(f"{name}: {row['trained']} trained, {row['screened']} screened", flush=True)


def _utc(moment: datetime) -> datetime:
    """A naive UTC datetime (SQLite returns naive ones, PostgreSQL aware ones)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _finished(store, ids: list[int]) -> dict[int, datetime]:
    """When each candidate's last proxy evaluation was stored: when it finished training.
    (Not the candidate's ``updated_at``, which later writes move, such as the Pareto
    front's ``on_front``.)"""
    from sqlalchemy import func, select

    from evonorm_search.store.models import Evaluation

    query = (
        select(Evaluation.candidate_id, func.max(Evaluation.created_at))
        .where(Evaluation.candidate_id.in_(ids), Evaluation.stage == "proxy")
        .group_by(Evaluation.candidate_id)
    )
    with store.engine.connect() as connection:
        return {cid: _utc(moment) for cid, moment in connection.execute(query)}


def _timeline(
    store, name: str, strategy: str, seed: int, worker_hours: float, workers: int
) -> dict:
    search, status = store.search(name), store.status(name)
    began = _utc(datetime.fromisoformat(search["created_at"]))
    ids = [c["id"] for c in store.history(name) if c["status"] == "trained"]
    finish = _finished(store, ids)
    trained = []
    for cid in ids:
        record = store.candidate(cid)
        finished = finish[cid] - began
        trained.append(
            {
                "id": cid,
                "formula": record["formula"],
                "graph": record["graph"],
                "mutation": record["mutation"],
                "scores": record["scores"],
                "mean_score": record["mean_score"],
                "worker_s": round(finished.total_seconds() * workers, 1),
            }
        )
    return {
        "strategy": strategy,
        "seed": seed,
        "worker_hours_budget": worker_hours,
        "workers": workers,
        "worker_s": status["worker_seconds"],
        "wall_s": status["elapsed_s"],
        "trained": status["trained"],
        "screened": status["screened"],
        "worker_by_fate": status["worker_by_fate"],
        "code_version": search["code_version"],
        "candidates": trained,
    }


def best_by_mark(run: dict) -> dict[float, dict | None]:
    """The best trained layer by proxy score found by each mark of the budget; at the last,
    the search's own best (the trials in flight when the budget ran out finish and count,
    for both strategies alike)."""
    budget = run["worker_hours_budget"] * 3600
    out = {}
    for mark in MARKS:
        limit = float("inf") if mark == MARKS[-1] else mark * budget
        found = [c for c in run["candidates"] if c["worker_s"] <= limit]
        out[mark] = max(found, key=lambda c: (c["mean_score"], -c["id"])) if found else None
    return out


def unit_key(row: dict) -> tuple[str, int, int, int]:
    return row["strategy"], row["search_seed"], row["id"], row["seed"]


def reevaluate_unit(job: tuple[dict, str]) -> dict:
    import torch

    from evonorm_search.search.reevaluate import reevaluate_trial
    from evonorm_search.search.trial import effective_space

    torch.set_num_threads(1)
    unit, data_dir = job
    report = reevaluate_trial(
        {
            "graph": unit["graph"],
            "seed": unit["seed"],
            "space": "evonorm_b",
            "dataset": "cifar10",
            "preset": None,
            "data_dir": data_dir,
        }
    )
    # Every proxy architecture scores, as in the search: one not trained because an earlier
    # one failed counts 0, like the failed one (else a mean over fewer networks flatters it).
    scores = dict.fromkeys(effective_space("evonorm_b", "cifar10", None).proxy.architectures, 0.0)
    scores.update(
        {
            e["architecture"]: e["accuracy"] or 0.0
            for e in report["evaluations"]
            if e["status"] == "completed"
        }
    )
    return {
        **{k: unit[k] for k in ("strategy", "search_seed", "id", "seed", "formula")},
        "scores": scores,
        "evaluations": report["evaluations"],
        "code_version": report["code_version"],
    }


def reevaluate(processes: int, data_dir: str) -> None:
    runs = study.done(RUNS, run_key)
    finished = study.done(REEVALUATED, unit_key, repair=True)
    jobs = []
    for (strategy, seed), run in sorted(runs.items()):
        layers = {c["id"]: c for c in best_by_mark(run).values() if c is not None}
        for cid, c in sorted(layers.items()):
            for extra in NEW_SEEDS:
                unit = {
                    "strategy": strategy,
                    "search_seed": seed,
                    "id": cid,
                    "seed": seed + extra,
                    "formula": c["formula"],
                    "graph": c["graph"],
                }
                if unit_key(unit) not in finished:
                    jobs.append((unit, data_dir))
    study.run(
        reevaluate_unit,
        jobs,
        REEVALUATED,
        processes,
        None,
        lambda r: f"{r['strategy']}-s{r['search_seed']} #{r['id']} seed {r['seed']}",
    )


def report(plot: Path | None) -> None:
    from evonorm_search.stats import compare_paired, interval_text, mean_interval

    runs = study.done(RUNS, run_key)
    units = study.done(REEVALUATED, unit_key)
    if not runs:
        sys.exit(
            "evolution_vs_random: no runs yet: `python benchmarks/evolution_vs_random.py "
            "search` first"
        )
    # (strategy, search seed) -> mark -> re-evaluated mean of the best layer by then
    curves: dict[tuple[str, int], dict[float, float]] = {}
    for key, run in sorted(runs.items()):
        curves[key] = {}
        for mark, c in best_by_mark(run).items():
            seeds = [units.get((*key, c["id"], key[1] + extra)) for extra in NEW_SEEDS] if c else []
            if c is not None and all(seeds):
                curves[key][mark] = statistics.fmean(
                    statistics.fmean(u["scores"].values()) for u in seeds
                )
    print(
        "| run | wall min | worker-hours | screened | trained | share of worker time "
        "training | best at the end: proxy | re-evaluated | origin | formula |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, run in sorted(runs.items()):
        best = best_by_mark(run)[MARKS[-1]]
        origin = (
            "-"
            if best is None
            else ("zoo" if (best["mutation"] or "").startswith("initial: baseline") else "found")
        )
        again = curves[key].get(MARKS[-1])
        print(
            f"| {key[0]}-s{key[1]} | {run['wall_s'] / 60:.1f} | {run['worker_s'] / 3600:.2f} "
            f"| {run['screened']} | {run['trained']} | "
            f"{run['worker_by_fate'].get('trained', 0) / run['worker_s']:.0%} | "
            + (
                "- | - | - | -"
                if best is None
                else f"#{best['id']} {best['mean_score']:.4f} | "
                f"{'-' if again is None else format(again, '.4f')} | {origin} | "
                f"`{best['formula']}`"
            )
            + " |"
        )
    print()
    print(
        "| strategy | search seeds | trained per worker-hour | "
        + " | ".join(f"at {m:g} of the budget" for m in MARKS)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(MARKS))
    for strategy in STRATEGIES:
        mine = {seed: run for (s, seed), run in runs.items() if s == strategy}
        if not mine:
            continue
        rates = [run["trained"] / (run["worker_s"] / 3600) for run in mine.values()]
        cells = []
        for mark in MARKS:
            values = [
                curves[strategy, seed][mark] for seed in mine if mark in curves[strategy, seed]
            ]
            cells.append(interval_text(mean_interval(values).to_dict()) if values else "-")
        print(
            f"| {strategy} | {', '.join(map(str, sorted(mine)))} | "
            f"{interval_text(mean_interval(rates).to_dict())} | " + " | ".join(cells) + " |"
        )
    end = MARKS[-1]
    by_seed = {
        s: {seed: curves[s, seed][end] for (t, seed) in curves if t == s and end in curves[s, seed]}
        for s in STRATEGIES
    }
    if by_seed["random"] and by_seed["evolution"]:
        [c] = compare_paired(by_seed["random"], {"evolution": by_seed["evolution"]})
        d = c.to_dict()
        print(
            f"\nevolution minus random at the end, paired over search seeds "
            f"{', '.join(map(str, d['seeds']))}: {interval_text(d['difference'])}, "
            f"p {'-' if d['p'] is None else format(d['p'], '.3g')}: "
            f"{d['verdict']}"
        )
    if plot is not None:
        _plot(runs, curves, plot)


def _plot(runs: dict, curves: dict, path: Path) -> None:
    """Left: each search's own best proxy score against worker-hours (the score that chose
    the layer, on the search's seed: biased upward).  Right: the best layer at each mark
    re-evaluated on new seeds, thin per search seed, thick the mean over search seeds with
    its 95% t-interval, at the marks every seed has reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evonorm_search.stats import mean_interval

    colors = {"evolution": "tab:blue", "random": "tab:orange"}
    styles = ("-", "--", ":", "-.")  # by search seed
    fig, (found, again) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for (strategy, seed), run in sorted(runs.items()):
        best, xs, ys = float("-inf"), [], []
        for c in sorted(run["candidates"], key=lambda c: c["worker_s"]):
            if c["mean_score"] > best:
                best = c["mean_score"]
                xs.append(c["worker_s"] / 3600)
                ys.append(best)
        if xs:
            xs.append(max(run["worker_s"] / 3600, xs[-1]))
            ys.append(ys[-1])
            found.step(
                xs,
                ys,
                where="post",
                color=colors[strategy],
                lw=1,
                alpha=0.8,
                ls=styles[seed % len(styles)],
                label=f"{strategy}, seed {seed}",
            )
        budget = run["worker_hours_budget"]
        points = sorted(curves[strategy, seed].items())
        if points:
            again.plot(
                [m * budget for m, _ in points],
                [v for _, v in points],
                ls=styles[seed % len(styles)],
                color=colors[strategy],
                alpha=0.35,
                lw=0.8,
            )
    for offset, strategy in zip((-0.01, 0.01), STRATEGIES, strict=True):
        mine = [
            (runs[key]["worker_hours_budget"], curves[key])
            for key in sorted(runs)
            if key[0] == strategy
        ]
        marks = [m for m in MARKS if mine and all(m in curve for _, curve in mine)]
        if not marks:
            continue
        budget = mine[0][0]
        stats = [mean_interval([curve[m] for _, curve in mine]).to_dict() for m in marks]
        low = [s["mean"] - s["low"] if s["low"] is not None else 0 for s in stats]
        high = [s["high"] - s["mean"] if s["high"] is not None else 0 for s in stats]
        again.errorbar(
            [m * budget + offset for m in marks],
            [s["mean"] for s in stats],
            yerr=[low, high],
            fmt="o-",
            color=colors[strategy],
            lw=2,
            capsize=3,
            label=f"{strategy}: mean of {len(mine)} seeds, 95% t-interval",
        )
    found.set_title("best proxy score found (the search's own seed)")
    again.set_title("that layer re-evaluated on two new seeds")
    found.set_ylabel("proxy validation accuracy, mean of 3 networks")
    for ax in (found, again):
        ax.set_xlabel("worker-hours")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("evolution against random search on evonorm_b, from the zoo")
    study.save(fig, path)


def main() -> None:
    parser, sub = study.commands(__doc__)
    data = study.CIFAR10
    s = sub.add_parser("search", help="the missing searches, each to its worker-time budget")
    s.add_argument("--seeds", default="0,1,2")
    s.add_argument("--worker-hours", type=float, default=1.0)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--data-dir", default=data)
    r = sub.add_parser("reevaluate", help="the best layer by each mark, on two new seeds")
    r.add_argument("--processes", type=int, default=2)
    r.add_argument("--data-dir", default=data)
    p = sub.add_parser("report", help="the table and the plot")
    p.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "search":
        search(
            [int(s) for s in args.seeds.split(",")], args.worker_hours, args.workers, args.data_dir
        )
    elif args.command == "reevaluate":
        reevaluate(args.processes, args.data_dir)
    else:
        report(args.plot)


if __name__ == "__main__":
    main()
