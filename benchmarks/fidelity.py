"""Does the proxy rank layers as the transfer protocol does? (issue 23, item 2)

    python benchmarks/fidelity.py layers                 # the seeded list of layers (cheap)
    python benchmarks/fidelity.py proxy [--processes 2] [--hours H]
    python benchmarks/fidelity.py transfer [--processes 2] [--hours H]
    python benchmarks/fidelity.py report [--plot docs/real-search/fidelity.png]

**Layers**, fixed before any is measured: the zoo layers of ``evonorm_b`` that passed the
quality check on the default protocol (``baselines evaluate --data cifar10``, seed 0: bn_relu,
gn_relu, ln_relu, evonorm_b0, evonorm_s0, layernorm, rmsnorm), and ``DRAWN`` layers that
passed it in the learning-signal study (``benchmarks/data/learning_signal/measured.jsonl``,
its report set, candidates that are functionally new against the zoo): every random survivor,
then zoo mutants drawn by ``numpy.random.default_rng(SEED)`` to make up the number.  Nothing
is hand-picked.

**Units**, each appended to ``benchmarks/data/fidelity/`` when it finishes (a rerun skips
what is done, so the study continues over several sittings; the files are committed):
- ``proxy.jsonl``, per layer and seed (1, 2): the default protocol as a search's trial runs
  it (CIFAR-10, the tiny preset, its steps on resnet, mobilenet and efficientnet, the
  learning-signal stage's figures from the first steps on resnet), every network trained to
  the end whatever its quality (a network that diverged scores 0); the same at twice the
  steps (``long``); and the same at three times the learning rate (``high_rate``: item 1 of
  the study found the default's one low rate flattering layers that cannot take a higher
  one; added before any unit was measured).  Seconds per part.
- ``transfer.jsonl``, per layer and seed (1, 2): the transfer protocol's run (ResNet-20 at
  full resolution, the space's ``[transfer]`` steps, batch and learning rate, no sweep):
  transfer-validation accuracy (0 when it diverged), its curve, seconds; and every split's
  figures, which the report does not read (item 4 reuses identical runs).

**Report**: per proxy setting (``default``: the mean over the three networks, as a search
ranks; ``resnet``: the default runs' resnet alone, a third of the cost; ``long``;
``high_rate``; ``signal``:
the learning-signal stage's loss drop after its first steps, nearly free) the layers' mean
over seeds against their mean transfer-validation accuracy: Spearman's and Kendall's rank
correlations with 95% bootstrap intervals over layers; each protocol's noise ceiling (the
rank correlation of its seed 1 with its seed 2 over the layers); the regret of taking the
proxy's top 3 (the best transfer-validation accuracy of all layers minus that of the proxy's
top 3); and the CPU seconds per layer and seed.  Then, exploratory and labelled so (not in
the plan), the same correlations over the layers that trained on transfer on every seed.
Transfer-test is not read here: this study chooses a protocol.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import study  # benchmarks/: the script's own folder

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "fidelity"
SIGNAL_DATA = HERE / "data" / "learning_signal" / "measured.jsonl"
SPACE = "evonorm_b"
SEED = 20261203
DRAWN = 10
SEEDS = (1, 2)
SETTINGS = ("default", "resnet", "long", "high_rate", "signal", "transfer")
ZOO = ("bn_relu", "gn_relu", "ln_relu", "evonorm_b0", "evonorm_s0", "layernorm", "rmsnorm")
BOOTSTRAP = 10_000
# Item 1 found the proxy's one low rate (0.05) flattering layers that cannot take a higher
# one: a third setting trains at three times the rate (0.15 at batch 64, the linear-scaling
# equivalent of BN-ReLU's best transfer rate, 0.3 at batch 128).
HIGH_RATE = 3


@functools.cache
def _space():
    from evonorm_search.search.trial import effective_space

    return effective_space(SPACE, "cifar10", None)


def layers() -> list[dict]:
    """The study's layers: the zoo's seven, then the drawn ones, in a fixed order."""
    import numpy as np

    from evonorm_search import baselines
    from evonorm_search.graph import LayerGraph
    from evonorm_search.hashing import functional_hash

    out = [
        {
            "layer": name,
            "kind": "zoo",
            "graph": baselines.get(name).to_json(),
            "formula": baselines.get(name).formula(),
        }
        for name in ZOO
    ]
    zoo_functions = {functional_hash(baselines.get(name)) for name in baselines.names()}
    rows = [json.loads(line) for line in SIGNAL_DATA.read_text().splitlines() if line.strip()]
    passed = sorted(
        (r for r in rows if r["quality"] == "passed" and r["index"] % 3 != 0),
        key=lambda r: r["index"],
    )
    passed = [
        r for r in passed if functional_hash(LayerGraph.from_json(r["graph"])) not in zoo_functions
    ]
    survivors = [r for r in passed if r["kind"] == "random"]
    mutants = [r for r in passed if r["kind"] != "random"]
    rng = np.random.default_rng(SEED)
    wanted = DRAWN - min(DRAWN, len(survivors))
    drawn = sorted(rng.choice(len(mutants), size=wanted, replace=False))
    picked = survivors[:DRAWN] + [mutants[int(k)] for k in drawn]
    out += [
        {"layer": f"#{r['index']}", "kind": r["kind"], "graph": r["graph"], "formula": r["formula"]}
        for r in picked
    ]
    return out


def _key(row: dict) -> tuple[str, int]:
    return row["layer"], row["seed"]


def _done(path: Path, *, repair: bool = False) -> dict[tuple[str, int], dict]:
    return study.done(path, _key, repair=repair)


_DATA: dict[str, object] = {}


def _data(data_dir: str):
    if "proxy" not in _DATA:
        from evonorm_search.proxy.data import load_dataset

        _DATA["proxy"] = load_dataset(
            "cifar10", root=data_dir, validation=_space().proxy.validation
        )
    return _DATA["proxy"]


def proxy_unit(job: tuple[dict, int, str]) -> dict:
    """One layer and seed on the proxy: default (with the signal figures) and long."""
    import torch

    from evonorm_search.graph import LayerGraph
    from evonorm_search.proxy.train import CandidateTraining

    torch.set_num_threads(1)
    layer, seed, data_dir = job
    space, graph = _space(), LayerGraph.from_json(layer["graph"])
    result = {"layer": layer["layer"], "seed": seed}
    t = space.training
    high = dataclasses.replace(
        space, training=dataclasses.replace(t, learning_rate=HIGH_RATE * t.learning_rate)
    )
    for name, steps, protocol in (
        ("default", t.steps, space),
        ("long", 2 * t.steps, space),
        ("high_rate", t.steps, high),
    ):
        start = time.perf_counter()
        training = CandidateTraining(graph, _data(data_dir), space=protocol, seed=seed, steps=steps)
        if name == "default":
            result["signal"] = training.signal().figures()
        runs = training.finish()
        result[name] = {
            "scores": {
                a: (r.accuracy or 0.0) if r.status == "completed" else 0.0 for a, r in runs.items()
            },
            "status": {a: r.status for a, r in runs.items()},
            "seconds": {a: round(r.seconds, 3) for a, r in runs.items()},
            "wall_s": round(time.perf_counter() - start, 3),
        }
    return result


def transfer_unit(job: tuple[dict, int, str]) -> dict:
    """One layer and seed on the transfer protocol, at the space's rate (no sweep).  Every
    split's figures are kept, transfer-test included: never read here (this study chooses a
    protocol), they let item 4 reuse an identical run."""
    from evonorm_search.search.transfer import transfer_settings

    layer, seed, data_dir = job
    settings = transfer_settings(_space(), {})
    return {
        "layer": layer["layer"],
        "seed": seed,
        **study.transfer_run(
            layer["graph"], seed, settings["learning_rate"], settings, data_dir, SPACE
        ),
    }


def _run(function, kind: str, processes: int, hours: float | None, data_dir: str) -> None:
    path = OUT / f"{kind}.jsonl"
    finished = _done(path, repair=True)
    jobs = [
        (layer, seed, data_dir)
        for layer in layers()
        for seed in SEEDS
        if (layer["layer"], seed) not in finished
    ]
    print(f"{kind}: {len(finished)} done", flush=True)
    study.run(
        function, jobs, path, processes, hours, lambda row: f"{row['layer']} seed {row['seed']}"
    )


# -- the report ----------------------------------------------------------------------------


def _scores(proxy: dict, transfer: dict, names: list[str]) -> dict[str, dict[str, dict]]:
    """Per setting, per layer, per seed: the score (higher ranks first)."""
    settings: dict[str, dict[str, dict]] = {s: {} for s in SETTINGS}
    for name in names:
        for seed in SEEDS:
            p, t = proxy.get((name, seed)), transfer.get((name, seed))
            if p is not None:
                settings["default"].setdefault(name, {})[seed] = statistics.fmean(
                    p["default"]["scores"].values()
                )
                settings["resnet"].setdefault(name, {})[seed] = p["default"]["scores"]["resnet"]
                for setting in ("long", "high_rate"):
                    settings[setting].setdefault(name, {})[seed] = statistics.fmean(
                        p[setting]["scores"].values()
                    )
                drop = p["signal"]["loss_drop"]
                settings["signal"].setdefault(name, {})[seed] = (
                    drop if drop is not None else float("-inf")
                )
            if t is not None:
                settings["transfer"].setdefault(name, {})[seed] = t["transfer_val"]
    return settings


def _correlations(x: list[float], y: list[float], seed: int = 0) -> dict[str, object]:
    """Spearman's and Kendall's tau with percentile bootstrap intervals over layers."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    x_, y_ = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {"spearman": [], "kendall": []}
    for _ in range(BOOTSTRAP):
        k = rng.integers(0, len(x_), len(x_))
        if len(set(x_[k])) < 2 or len(set(y_[k])) < 2:
            continue
        boot["spearman"].append(spearmanr(x_[k], y_[k]).statistic)
        boot["kendall"].append(kendalltau(x_[k], y_[k]).statistic)
    out: dict[str, object] = {"n": len(x_)}
    for name, f in (("spearman", spearmanr), ("kendall", kendalltau)):
        values = np.asarray(boot[name])
        values = values[np.isfinite(values)]
        out[name] = (
            float(f(x_, y_).statistic),
            float(np.percentile(values, 2.5)),
            float(np.percentile(values, 97.5)),
        )
    return out


def report(plot: Path | None) -> None:
    proxy, transfer = _done(OUT / "proxy.jsonl"), _done(OUT / "transfer.jsonl")
    chosen = layers()
    names = [layer["layer"] for layer in chosen]
    scores = _scores(proxy, transfer, names)
    complete = [n for n in names if all(len(scores[s].get(n, {})) == len(SEEDS) for s in scores)]
    print(
        f"{len(complete)} of {len(names)} layers measured on every setting and seed "
        f"({len(proxy)} proxy units, {len(transfer)} transfer units)"
    )
    if len(complete) < 4:
        sys.exit(
            "fidelity: too few layers measured for a correlation: run `proxy` and `transfer` first"
        )

    def mean(setting: str, name: str) -> float:
        return statistics.fmean(scores[setting][name].values())

    print(
        "\n| layer | kind | default | resnet | long | high rate | signal (loss drop) | "
        "transfer-validation | formula |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for layer in chosen:
        n = layer["layer"]
        if n in complete:
            print(
                f"| {n} | {layer['kind']} | {mean('default', n):.4f} | {mean('resnet', n):.4f} "
                f"| {mean('long', n):.4f} | {mean('high_rate', n):.4f} | "
                f"{mean('signal', n):.3f} | "
                f"{mean('transfer', n):.4f} | `{layer['formula']}` |"
            )

    truth = [mean("transfer", n) for n in complete]
    best = max(truth)
    cost = _seconds(proxy, transfer, complete)
    print(
        "\n| setting | Spearman [95% bootstrap] | Kendall [95% bootstrap] | noise ceiling "
        "(seed 1 vs 2, Spearman) | regret of its top 3 | CPU s per layer and seed |"
    )
    print("|---|---|---|---|---|---|")
    spearman: dict[str, tuple[float, float, float]] = {}
    for setting in SETTINGS:
        ranked = [mean(setting, n) for n in complete]
        ceiling = _correlations(
            [scores[setting][n][SEEDS[0]] for n in complete],
            [scores[setting][n][SEEDS[1]] for n in complete],
        )
        if setting == "transfer":
            row = ["-", "-"]
            regret = "-"
        else:
            c = _correlations(ranked, truth)
            spearman[setting] = c["spearman"]
            row = [_rho(c["spearman"]), _rho(c["kendall"])]
            top3 = sorted(range(len(complete)), key=lambda k: -ranked[k])[:3]
            regret = f"{best - max(truth[k] for k in top3):.4f}"
        print(
            f"| {setting} | {row[0]} | {row[1]} | {_rho(ceiling['spearman'])} | "
            f"{regret} | {cost[setting]:.0f} |"
        )
    print(_decision(spearman, cost, complete == names))
    _trained_only(scores, complete, mean)
    if plot is not None:
        _plot(chosen, complete, scores, plot)


def _trained_only(scores: dict, complete: list[str], mean) -> None:
    """Exploratory, not in the plan: the correlations over the layers that trained on
    transfer, so that the few which diverge there (and near the bottom of every proxy) do
    not carry the whole correlation."""
    trained = [n for n in complete if all(v > 0 for v in scores["transfer"][n].values())]
    if len(trained) < 4:
        return
    truth = [mean("transfer", n) for n in trained]
    print(
        f"\nexploratory (not in the plan): over the {len(trained)} layers that trained on "
        "transfer (no seed diverged)"
    )
    print("\n| setting | Spearman [95% bootstrap] | Kendall [95% bootstrap] |\n|---|---|---|")
    for setting in LABELS:  # the proxy settings
        c = _correlations([mean(setting, n) for n in trained], truth)
        print(f"| {setting} | {_rho(c['spearman'])} | {_rho(c['kendall'])} |")


def _decision(
    spearman: dict[str, tuple[float, float, float]], cost: dict[str, float], every_layer: bool
) -> str:
    """The plan's rule, applied as written: the space files change only to a setting whose
    Spearman lies above the upper end of the default's 95% interval, the cheapest such."""
    bound = spearman["default"][2]
    above = [s for s, rho in spearman.items() if s != "default" and rho[0] > bound]
    if not every_layer:
        return "\nrule: not applied until every layer is measured on every setting and seed"
    if not above:
        return (
            f"\nrule: no setting's Spearman lies above {bound:.2f}, the upper end of the "
            "default's interval: the space files keep the default"
        )
    cheapest = min(above, key=cost.__getitem__)
    return (
        f"\nrule: {', '.join(above)} lie above {bound:.2f}, the upper end of the default's "
        f"interval; the cheapest is {cheapest}: the space files default to it"
    )


def _rho(value: tuple[float, float, float]) -> str:
    return f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"


def _seconds(proxy: dict, transfer: dict, names: list[str]) -> dict[str, float]:
    """Mean CPU seconds per layer and seed of each setting (one thread per unit)."""
    units = [proxy[n, s] for n in names for s in SEEDS]
    return {
        "default": statistics.fmean(sum(u["default"]["seconds"].values()) for u in units),
        "resnet": statistics.fmean(u["default"]["seconds"]["resnet"] for u in units),
        "long": statistics.fmean(sum(u["long"]["seconds"].values()) for u in units),
        "high_rate": statistics.fmean(sum(u["high_rate"]["seconds"].values()) for u in units),
        "signal": statistics.fmean(u["signal"]["seconds"] for u in units),
        "transfer": statistics.fmean(transfer[n, s]["seconds"] for n in names for s in SEEDS),
    }


LABELS = {
    "default": "proxy (default): mean validation accuracy",
    "resnet": "proxy: its resnet run alone",
    "long": "proxy at twice the steps",
    "high_rate": "proxy at three times the rate",
    "signal": "learning signal: loss drop",
}


def _plot(chosen: list[dict], names: list[str], scores: dict, path: Path) -> None:
    """One panel per proxy setting (each layer's mean over seeds against its transfer mean,
    bars spanning the two seeds) and one of transfer's seed 1 against seed 2: its noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = {layer["layer"]: layer["kind"] for layer in chosen}
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.6))
    for ax, setting in zip(axes.flat, LABELS, strict=False):
        for n in names:
            xs = [v for v in scores[setting][n].values() if v != float("-inf")]
            ys = list(scores["transfer"][n].values())
            if not xs:  # a learning-signal stage that never ran: no loss drop to place
                continue
            x, y = statistics.fmean(xs), statistics.fmean(ys)
            zoo = kinds[n] == "zoo"
            ax.errorbar(
                x,
                y,
                xerr=[[x - min(xs)], [max(xs) - x]],
                yerr=[[y - min(ys)], [max(ys) - y]],
                fmt="o" if zoo else "s",
                color="tab:blue" if zoo else "tab:orange",
                ms=5,
                lw=0.8,
            )
            if zoo:
                ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(LABELS[setting])
        ax.set_ylabel("ResNet-20 transfer-validation")
        ax.grid(alpha=0.3)
    ax = axes.flat[-1]
    for n in names:
        one, two = (scores["transfer"][n][seed] for seed in SEEDS)
        ax.plot(
            one,
            two,
            "o" if kinds[n] == "zoo" else "s",
            ms=5,
            color="tab:blue" if kinds[n] == "zoo" else "tab:orange",
        )
    ax.plot([0, 0.8], [0, 0.8], color="grey", lw=0.6)
    ax.set_xlabel(f"transfer-validation, seed {SEEDS[0]}")
    ax.set_ylabel(f"transfer-validation, seed {SEEDS[1]}")
    ax.grid(alpha=0.3)
    fig.suptitle(
        "fidelity: each layer's mean over 2 seeds (bars: the two seeds); "
        "circles: zoo, squares: drawn"
    )
    study.save(fig, path)


def main() -> None:
    parser, sub = study.commands(__doc__)
    sub.add_parser("layers", help="print the study's layers")
    for kind in ("proxy", "transfer"):
        p = sub.add_parser(kind, help=f"measure the {kind} units still missing")
        p.add_argument("--processes", type=int, default=2)
        p.add_argument("--hours", type=float, default=None, help="stop after this long")
        p.add_argument("--data-dir", default=study.CIFAR10)
    r = sub.add_parser("report", help="the correlations, ceilings, regrets and costs")
    r.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "layers":
        for layer in layers():
            print(f"{layer['layer']:>12}  {layer['kind']:<24} {layer['formula']}")
    elif args.command == "report":
        report(args.plot)
    else:
        function = proxy_unit if args.command == "proxy" else transfer_unit
        _run(function, args.command, args.processes, args.hours, args.data_dir)


if __name__ == "__main__":
    main()
