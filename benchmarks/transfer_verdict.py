"""A discovered layer, or an honest no (issue 23, item 4; docs/real-search.md).

    python benchmarks/transfer_verdict.py pick [--processes 2] [--data-dir DIR]
    python benchmarks/transfer_verdict.py transfer [--processes 2] [--hours H] [--data-dir DIR]
    python benchmarks/transfer_verdict.py report [--plot docs/real-search/verdict.png]

The rules below were fixed before any evolution run of item 3 had finished.

``pick``: the layers that go on to transfer.  From each evolution run of
``evolution_vs_random.py`` (``strategies.jsonl``), its ``PER_RUN`` best trained layers by
proxy score that are functionally new against the zoo (functional twins within a run count
once) are trained again on the proxy with two new seeds (the search's seed + 1 and + 2,
``evolution_vs_random.reevaluate_unit``, appended to the same file as its own units, which
share their key).  Pooled over the runs, functional twins merged, the ``DISCOVERED`` layers
with the best re-evaluated mean (over both seeds and the three networks) are the discovered
layers.  Nothing here reads a transfer figure.

``transfer``: each discovered layer and the zoo's ``ZOO`` on ResNet-20 by the space's
``[transfer]`` protocol (``study.transfer_run``: the worker function of
``evonorm-search transfer``), units appended to ``verdict.jsonl`` as they finish:
1. a learning-rate sweep, ``RATES`` at seed 0 (never a reported seed), the rate with the best
   transfer-validation accuracy kept (the first of equals);
2. seeds 1-3 at that rate;
3. then, fixed on transfer-validation alone (means over seeds 1-3): the comparator (the best
   zoo layer) and the best discovered layer, each trained on seeds 4 and 5 as well.
A run identical to one measured before (same layer, seed, rate and run settings: the zoo's
runs in item 1's ``item1.jsonl`` and the fidelity study's ``transfer.jsonl``) is taken from
there rather than trained again; the report counts them.

``report``: the sweep; per layer at its rate, transfer-validation and transfer-test means
with 95% t-intervals over seeds 1-5 (or 1-3); the paired differences on transfer-test of each
discovered layer to the comparator, Holm-corrected over the discovered layers; the verdict
of the comparison fixed in advance (the best discovered layer against the comparator, seeds
1-5); the learning curves; with ``--plot``, each discovered layer's graph drawn beside the
plot.  A run that diverged counts as chance accuracy (0.1) in every figure and is named in
the table.
"""

from __future__ import annotations

import functools
import statistics
import sys
from pathlib import Path

import evolution_vs_random as strategies  # benchmarks/
import study

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "real_search"
UNITS = DATA / "verdict.jsonl"
EARLIER = (DATA / "item1.jsonl", HERE / "data" / "fidelity" / "transfer.jsonl")
SPACE = "evonorm_b"
PER_RUN = 3
DISCOVERED = 2
ZOO = ("bn_relu", "evonorm_b0", "gn_relu", "evonorm_s0")
RATES = (0.03, 0.1, 0.3)
SWEEP_SEED = 0
SEEDS = (1, 2, 3)
PAIR_SEEDS = (4, 5)
CHANCE = 0.1
# What a run depends on besides its layer, seed and rate (``transfer_settings``' keys that
# a single run reads).
RUN_SETTINGS = (
    "networks",
    "steps",
    "batch_size",
    "momentum",
    "weight_decay",
    "eval_every",
    "dataset",
    "transfer_slice",
    "groups",
)


@functools.cache
def _settings() -> dict:
    from evonorm_search.search.transfer import transfer_settings
    from evonorm_search.search.trial import effective_space

    return transfer_settings(effective_space(SPACE, "cifar10", None), {})


@functools.cache
def _zoo_hashes() -> frozenset[str]:
    from evonorm_search import baselines
    from evonorm_search.hashing import functional_hash

    return frozenset(functional_hash(baselines.get(name)) for name in baselines.names())


def _hash(graph: str) -> str:
    from evonorm_search.graph import LayerGraph
    from evonorm_search.hashing import functional_hash

    return functional_hash(LayerGraph.from_json(graph))


# -- pick ----------------------------------------------------------------------------------


def _candidates() -> list[dict]:
    """Each evolution run's ``PER_RUN`` best new layers by proxy score, with their hash."""
    runs = study.done(strategies.RUNS, strategies.run_key)
    out = []
    for (strategy, seed), run in sorted(runs.items()):
        if strategy != "evolution":
            continue
        seen: set[str] = set()
        for c in sorted(run["candidates"], key=lambda c: (-c["mean_score"], c["id"])):
            h = _hash(c["graph"])
            if h in _zoo_hashes() or h in seen:
                continue
            seen.add(h)
            out.append({**c, "search_seed": seed, "hash": h})
            if len(seen) == PER_RUN:
                break
    return out


def _unit(c: dict, extra: int) -> dict:
    return {
        "strategy": "evolution",
        "search_seed": c["search_seed"],
        "id": c["id"],
        "seed": c["search_seed"] + extra,
        "formula": c["formula"],
        "graph": c["graph"],
    }


def pick(processes: int, data_dir: str) -> None:
    candidates = _candidates()
    if not candidates:
        sys.exit(
            "transfer_verdict: no evolution run yet: `python benchmarks/"
            "evolution_vs_random.py search` first"
        )
    done = study.done(strategies.REEVALUATED, strategies.unit_key, repair=True)
    jobs = [
        (_unit(c, extra), data_dir)
        for c in candidates
        for extra in strategies.NEW_SEEDS
        if strategies.unit_key(_unit(c, extra)) not in done
    ]
    study.run(
        strategies.reevaluate_unit,
        jobs,
        strategies.REEVALUATED,
        processes,
        None,
        lambda r: f"evolution-s{r['search_seed']} #{r['id']} seed {r['seed']}",
    )
    for layer in discovered(verbose=True):
        print(f"picked {layer['layer']}: {layer['reevaluated']:.4f}  {layer['formula']}")


def discovered(verbose: bool = False) -> list[dict]:
    """The ``DISCOVERED`` layers, best first; an error until every unit of ``pick`` is in."""
    units = study.done(strategies.REEVALUATED, strategies.unit_key)
    pooled: dict[str, dict] = {}
    for c in _candidates():
        rows = [units.get(strategies.unit_key(_unit(c, extra))) for extra in strategies.NEW_SEEDS]
        if not all(rows):
            sys.exit("transfer_verdict: the re-evaluation is not complete: run `pick`")
        entry = pooled.setdefault(
            c["hash"],
            {
                "layer": f"E{c['search_seed']}#{c['id']}",
                "formula": c["formula"],
                "graph": c["graph"],
                "scores": [],
                "found_in": [],
            },
        )
        entry["scores"] += [statistics.fmean(r["scores"].values()) for r in rows]
        entry["found_in"].append(
            f"evolution-s{c['search_seed']} #{c['id']} (proxy {c['mean_score']:.4f})"
        )
    for entry in pooled.values():
        entry["reevaluated"] = statistics.fmean(entry["scores"])
    ranked = sorted(pooled.values(), key=lambda e: (-e["reevaluated"], e["layer"]))
    if verbose:
        print("| layer | re-evaluated proxy mean | found in | formula |\n|---|---|---|---|")
        for e in ranked:
            print(
                f"| {e['layer']} | {e['reevaluated']:.4f} | {'; '.join(e['found_in'])} | "
                f"`{e['formula']}` |"
            )
    return ranked[:DISCOVERED]


# -- transfer ------------------------------------------------------------------------------


def _layers() -> list[dict]:
    from evonorm_search import baselines

    zoo = [
        {
            "layer": name,
            "kind": "zoo",
            "graph": baselines.get(name).to_json(),
            "formula": baselines.get(name).formula(),
        }
        for name in ZOO
    ]
    return [{**d, "kind": "discovered"} for d in discovered()] + zoo


def _key(row: dict) -> tuple[str, int, float]:
    return row["layer"], row["seed"], row["learning_rate"]


def _runs() -> dict[tuple[str, int, float], dict]:
    """Every run of this study's layers by (layer, seed, rate): its own, then the identical
    ones measured earlier (zoo layers, by name), marked with their ``source``."""
    own = study.done(UNITS, _key)
    wanted = {k: _settings()[k] for k in RUN_SETTINGS}
    runs = {}
    for path in EARLIER:
        for key, row in study.done(path, _key_of_earlier).items():
            if key[0] in ZOO and {k: row["settings"][k] for k in RUN_SETTINGS} == wanted:
                runs[key] = {**_normal(row), "source": path.name}
    runs.update({k: {**row, "source": UNITS.name} for k, row in own.items()})
    return runs


def _key_of_earlier(row: dict) -> tuple[str, int, float]:
    return row["layer"], row["seed"], row.get("learning_rate", row["settings"]["learning_rate"])


def _normal(row: dict) -> dict:
    """An earlier file's row in this file's shape."""
    test = row.get("transfer_test")
    if test is None:
        test = ((row.get("splits") or {}).get("transfer_test") or {}).get("accuracy")
    return {
        "layer": row["layer"],
        "seed": row["seed"],
        "learning_rate": _key_of_earlier(row)[2],
        "status": row["status"],
        "transfer_val": row["transfer_val"],
        "transfer_test": test,
        "curve": row.get("curve"),
        "seconds": row.get("seconds"),
    }


def _score(run: dict, split: str) -> float:
    return run[split] if run["status"] == "completed" else CHANCE


def _chosen(runs: dict, layer: str) -> float | None:
    """The sweep's rate for ``layer`` (None until every sweep run is in)."""
    sweep = [runs.get((layer, SWEEP_SEED, lr)) for lr in RATES]
    if not all(sweep):
        return None
    return max(
        zip(RATES, sweep, strict=True),
        key=lambda p: (_score(p[1], "transfer_val"), -RATES.index(p[0])),
    )[0]


def _pair(runs: dict, layers: list[dict]) -> tuple[str, str] | None:
    """(best discovered, comparator) by transfer-validation over seeds 1-3; None until those
    runs are all in."""
    means = {}
    for layer in layers:
        rate = _chosen(runs, layer["layer"])
        found = [runs.get((layer["layer"], s, rate)) for s in SEEDS] if rate else [None]
        if not all(found):
            return None
        means[layer["layer"]] = statistics.fmean(_score(r, "transfer_val") for r in found)

    def best(kind: str) -> str:
        return max((x["layer"] for x in layers if x["kind"] == kind), key=lambda n: (means[n], n))

    return best("discovered"), best("zoo")


def _jobs(runs: dict, layers: list[dict], data_dir: str) -> list[tuple]:
    jobs = []
    for layer in layers:
        rate = _chosen(runs, layer["layer"])
        wanted = [(SWEEP_SEED, lr) for lr in RATES] if rate is None else [(s, rate) for s in SEEDS]
        jobs += [
            (layer, seed, lr, data_dir)
            for seed, lr in wanted
            if (layer["layer"], seed, lr) not in runs
        ]
    pair = _pair(runs, layers)
    for name in pair or ():
        rate = _chosen(runs, name)
        layer = next(x for x in layers if x["layer"] == name)
        jobs += [(layer, s, rate, data_dir) for s in PAIR_SEEDS if (name, s, rate) not in runs]
    return jobs


def transfer_unit(job: tuple[dict, int, float, str]) -> dict:
    layer, seed, rate, data_dir = job
    run = study.transfer_run(layer["graph"], seed, rate, _settings(), data_dir, SPACE)
    splits = run["splits"] or {}
    return {
        "layer": layer["layer"],
        "formula": layer["formula"],
        "seed": seed,
        "phase": "sweep" if seed == SWEEP_SEED else "final",
        "transfer_test": (splits.get("transfer_test") or {}).get("accuracy"),
        **{k: v for k, v in run.items() if k != "splits"},
        "splits": splits,
    }


def transfer(processes: int, hours: float | None, data_dir: str) -> None:
    import time

    layers = _layers()
    deadline = None if hours is None else time.monotonic() + 3600 * hours
    while True:
        runs = _runs()
        jobs = _jobs(runs, layers, data_dir)
        if not jobs:
            print(f"transfer: every run is in ({len(runs)} of this study's layers)")
            return
        left = None if deadline is None else (deadline - time.monotonic()) / 3600
        if left is not None and left <= 0:
            print("time is up: rerun to continue")
            return
        study.done(UNITS, _key, repair=True)
        if not study.run(
            transfer_unit,
            jobs,
            UNITS,
            processes,
            left,
            lambda r: f"{r['layer']} seed {r['seed']} lr {r['learning_rate']}",
        ):
            return


# -- report --------------------------------------------------------------------------------


def report(plot: Path | None) -> None:
    from evonorm_search.stats import compare_paired, interval_text, mean_interval

    layers, runs = _layers(), _runs()
    print(
        "| layer | kind | "
        + " | ".join(f"sweep lr {lr:g}" for lr in RATES)
        + " | chosen | formula |\n|---|---|"
        + "---|" * len(RATES)
        + "---|---|"
    )
    for layer in layers:
        n = layer["layer"]
        cells = [
            f"{_score(r, 'transfer_val'):.4f}" if r else "-"
            for r in (runs.get((n, SWEEP_SEED, lr)) for lr in RATES)
        ]
        rate = _chosen(runs, n)
        print(
            f"| {n} | {layer['kind']} | "
            + " | ".join(cells)
            + f" | {rate if rate else '-'} | `{layer['formula']}` |"
        )
    final: dict[str, dict[int, dict]] = {}
    for layer in layers:
        rate = _chosen(runs, layer["layer"])
        final[layer["layer"]] = {
            s: runs[layer["layer"], s, rate]
            for s in SEEDS + PAIR_SEEDS
            if rate and (layer["layer"], s, rate) in runs
        }
    print(
        "\n| layer | lr | seeds | transfer-validation | transfer-test | diverged | "
        "runs reused |\n|---|---|---|---|---|---|---|"
    )
    for layer in layers:
        mine = final[layer["layer"]]
        if not mine:
            continue

        def interval(split: str, rows: dict = mine) -> str:
            return interval_text(mean_interval([_score(r, split) for r in rows.values()]).to_dict())

        reused = sum(r["source"] != UNITS.name for r in mine.values())
        diverged = [s for s, r in mine.items() if r["status"] != "completed"]
        print(
            f"| {layer['layer']} | {_chosen(runs, layer['layer'])} | "
            f"{','.join(map(str, sorted(mine)))} | {interval('transfer_val')} | "
            f"{interval('transfer_test')} | {diverged or '-'} | {reused} |"
        )
    pair = _pair(runs, layers)
    if pair is None:
        print("\nseeds 1-3 are not all in: no comparator yet")
        return
    best, comparator = pair
    print(
        f"\ncomparator (best zoo layer on transfer-validation, seeds 1-3): {comparator}; "
        f"best discovered layer: {best}"
    )

    def test(name: str) -> dict[int, float]:
        return {s: _score(r, "transfer_test") for s, r in final[name].items()}

    others = {x["layer"]: test(x["layer"]) for x in layers if x["kind"] == "discovered"}
    print(
        "\n| discovered minus comparator, transfer-test | seeds | difference [95%] | p | "
        "p (Holm) | verdict |\n|---|---|---|---|---|---|"
    )
    for c in compare_paired(test(comparator), others):
        d = c.to_dict()
        p = "-" if d["p"] is None else f"{d['p']:.3g}"
        ph = "-" if d["p_holm"] is None else f"{d['p_holm']:.3g}"
        print(
            f"| {d['name']} | {','.join(map(str, d['seeds']))} | "
            f"{interval_text(d['difference'])} | {p} | {ph} | {d['verdict']} |"
        )
        if d["name"] == best:
            fixed = d
    done = len(fixed["seeds"]) == len(SEEDS + PAIR_SEEDS)
    print(
        f"\nthe comparison fixed in advance, {best} against {comparator} on seeds "
        f"{','.join(map(str, fixed['seeds']))}: {fixed['verdict']}"
        + ("" if done else " (seeds 4-5 not all in yet)")
    )
    if plot is not None:
        _plot(layers, final, plot)
        _drawings(layers, plot.parent)


def _drawings(layers: list[dict], folder: Path) -> None:
    """Each discovered layer's graph, drawn beside the plot (the docs show them)."""
    from evonorm_search.graph import LayerGraph
    from evonorm_search.plots import draw_graph

    for layer in layers:
        if layer["kind"] == "discovered":
            path = folder / f"verdict-{layer['layer'].replace('#', '-')}.png"
            draw_graph(
                LayerGraph.from_json(layer["graph"]),
                path,
                title=f"{layer['layer']}: {layer['formula']}",
            )
            print(f"drawing: {path}")


def _plot(layers: list[dict], final: dict[str, dict[int, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evonorm_search.stats import mean_interval

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, layer in enumerate(layers):
        rows = [r for r in final[layer["layer"]].values() if r["status"] == "completed"]
        if not rows:  # every run diverged: no curve, and chance accuracy is off the chart
            bars.annotate(
                "all runs\ndiverged",
                (k, 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
            continue
        steps = [step for step, _ in rows[0]["curve"]]
        mean = [statistics.fmean(r["curve"][i][1] for r in rows) for i in range(len(steps))]
        style = "-" if layer["kind"] == "discovered" else "--"
        curves.plot(steps, mean, style, color=f"C{k}", label=layer["layer"])
        scores = [_score(r, "transfer_test") for r in final[layer["layer"]].values()]
        i = mean_interval(scores)
        low = i.mean - i.low if i.low is not None else 0
        bars.errorbar([k], [i.mean], yerr=[[low], [low]], fmt="o", color=f"C{k}", capsize=4)
    curves.set_xlabel("step")
    curves.set_ylabel("transfer-validation accuracy (mean over seeds)")
    curves.set_title("ResNet-20 learning curves at each layer's rate")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8)
    bars.set_xticks(range(len(layers)), [x["layer"] for x in layers], rotation=30, fontsize=8)
    bars.set_ylabel("transfer-test accuracy (mean, 95% t-interval)")
    bars.grid(alpha=0.3)
    study.save(fig, path)


def main() -> None:
    parser, sub = study.commands(__doc__)
    p = sub.add_parser("pick", help="re-evaluate the evolution runs' best and pick the layers")
    t = sub.add_parser("transfer", help="the sweep and the seeds still missing")
    for command in (p, t):
        command.add_argument("--processes", type=int, default=2)
        command.add_argument("--data-dir", default=study.CIFAR10)
    t.add_argument("--hours", type=float, default=None, help="stop after this long")
    r = sub.add_parser("report", help="the tables, the verdict and the plot")
    r.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "pick":
        pick(args.processes, args.data_dir)
    elif args.command == "transfer":
        transfer(args.processes, args.hours, args.data_dir)
    else:
        report(args.plot)


if __name__ == "__main__":
    main()
