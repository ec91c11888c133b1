"""Why a proxy's pick did not transfer: the README's first CIFAR-10 top layer against
EvoNorm-B0 and BN-ReLU on ResNet-20 (issue 23, item 1; docs/real-search.md).

    D=../shared/data/cifar-10-batches-py
    evonorm-search baselines evaluate --data cifar10 --data-dir $D --workers 2 \\
        --db sqlite:///runs/c10.db
    evonorm-search transfer baselines-evonorm_b-cifar10-tiny-s0 --top 0 \\
        --zoo bn_relu,evonorm_b0 \\
        --layer "(v1 * x + v1 * x) / max(std_batch(x), v1 * x + exp(v0))" \\
        --learning-rates 0.03,0.1,0.3 --seeds 2 --workers 2 --db sqlite:///runs/c10.db
    python benchmarks/transfer_diagnosis.py export --db sqlite:///runs/c10.db
    python benchmarks/transfer_diagnosis.py proxy [--processes 2]
    python benchmarks/transfer_diagnosis.py report [--plot docs/real-search/item1-curves.png]

``export`` writes every transfer run of the search (the learning-rate sweep at seed 0 and
the seeds at the chosen rate) to ``benchmarks/data/real_search/item1.jsonl``, which is
committed (the database is not).  ``proxy`` trains the same three layers on the proxy that
chose the top layer (the default protocol: CIFAR-10, the tiny preset, its three networks),
seeds 1-3, every network to the end, and appends each (layer, seed) to
``benchmarks/data/real_search/item1_proxy.jsonl``: validation accuracy in eval mode and with
batch statistics per network (does the proxy prefer the layer on other seeds too, and do
its running estimates matter there?).  ``report`` reads only those files and prints, per
layer: the proxy's scores over seeds; the
sweep (transfer-validation accuracy per rate); the seeds' means with 95% t-intervals on
transfer-validation, transfer-test and transfer-validation with batch statistics (the gap
to eval mode measures the running estimates); the paired differences on transfer-test to
EvoNorm-B0, Holm-corrected; the learning curves (mean transfer-validation accuracy every 100
steps: does an early lead reverse?); and each layer's output scale at initialization on a
unit-normal input (does the layer double its output?).
"""

from __future__ import annotations

import json
import operator
import statistics
import sys
from pathlib import Path

import study  # benchmarks/: the script's own folder

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "real_search" / "item1.jsonl"
PROXY_DATA = HERE / "data" / "real_search" / "item1_proxy.jsonl"
SEARCH = "baselines-evonorm_b-cifar10-tiny-s0"
REFERENCE = "evonorm_b0"
TOP = "README top layer"
TOP_FORMULA = "(v1 * x + v1 * x) / max(std_batch(x), v1 * x + exp(v0))"
PROXY_SEEDS = (1, 2, 3)


def export(db: str, search: str, path: Path) -> None:
    """Every stored transfer run of ``search`` as one JSON line, sweep and seeds alike."""
    from evonorm_search.store import Store

    lines = []
    with Store(db, readonly=True) as store:
        done = (store.search(search)["config"] or {}).get("transfer")
        if done is None:
            sys.exit(f"transfer_diagnosis: search {search!r} has no transfer")
        for entry in done["layers"]:
            record = store.candidate(entry["candidate"])
            for e in record["evaluations"]:
                f = e.get("figures") or {}
                if e["stage"] != "transfer" or f.get("key") != done["key"]:
                    continue
                lines.append(
                    {
                        "layer": entry["label"] if entry["kind"] == "baseline" else TOP,
                        "formula": record["formula"],
                        "phase": f["phase"],
                        "network": e["architecture"],
                        "seed": e["seed"],
                        "learning_rate": f["learning_rate"],
                        "status": e["status"],
                        "steps": e["steps"],
                        "seconds": e["seconds"],
                        "transfer_val": e["accuracy"],
                        "transfer_test": (f.get("transfer_test") or {}).get("accuracy"),
                        "transfer_val_batch_statistics": (
                            f.get("transfer_val_batch_statistics") or {}
                        ).get("accuracy"),
                        "curve": f.get("curve"),
                        "code_version": e.get("code_version"),
                        "settings": done["settings"],
                    }
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    print(f"{len(lines)} runs written to {path}")


def _proxy_layers() -> dict[str, str]:
    from evonorm_search import baselines

    return {
        "bn_relu": baselines.get("bn_relu").formula(),
        "evonorm_b0": baselines.get("evonorm_b0").formula(),
        TOP: TOP_FORMULA,
    }


def proxy_unit(job: tuple[str, int, str]) -> dict:
    """One layer and seed on the default proxy, every network to the end."""
    import torch

    from evonorm_search.graph import LayerGraph
    from evonorm_search.proxy.data import load_dataset
    from evonorm_search.proxy.train import CandidateTraining, evaluate
    from evonorm_search.search.trial import effective_space

    torch.set_num_threads(1)
    layer, seed, data_dir = job
    space = effective_space("evonorm_b", "cifar10", None)
    data = load_dataset("cifar10", root=data_dir, validation=space.proxy.validation)
    training = CandidateTraining(
        LayerGraph.parse(_proxy_layers()[layer]), data, space=space, seed=seed
    )
    results = training.finish()
    row = {"layer": layer, "seed": seed, "steps": space.training.steps, "networks": {}}
    for architecture, result in results.items():
        model = training.run(architecture).model
        ok = result.status == "completed"
        row["networks"][architecture] = {
            "status": result.status,
            "accuracy": result.accuracy if ok else None,
            "batch_statistics": evaluate(model, data, "val", batch_statistics=True)[0]
            if ok
            else None,
            "seconds": round(result.seconds, 3),
        }
    return row


def proxy(data_dir: str, processes: int) -> None:
    key = operator.itemgetter("layer", "seed")
    finished = study.done(PROXY_DATA, lambda row: tuple(key(row)), repair=True)
    jobs = [
        (layer, seed, data_dir)
        for layer in _proxy_layers()
        for seed in PROXY_SEEDS
        if (layer, seed) not in finished
    ]
    study.run(
        proxy_unit,
        jobs,
        PROXY_DATA,
        processes,
        None,
        lambda row: f"{row['layer']} seed {row['seed']}",
    )


def output_scale(formula: str, groups: int) -> dict[str, float]:
    """The layer at initialization (train mode, batch statistics) on a unit-normal input of
    ResNet-20's first stage (128 x 16 x 32 x 32): the output's spread, mean and range."""
    import torch

    from evonorm_search.layer import GraphNormAct

    torch.manual_seed(0)
    x = torch.randn(128, 16, 32, 32)
    with torch.no_grad():
        y = GraphNormAct(formula, 16, groups=groups).train()(x)
    return {
        "std": y.std().item(),
        "mean": y.mean().item(),
        "max": y.max().item(),
        "min": y.min().item(),
    }


def report(path: Path, plot: Path | None) -> None:
    from evonorm_search.stats import compare_paired, interval_text, mean_interval

    if not path.exists():
        sys.exit(f"transfer_diagnosis: no {path}: run `export` first")
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    layers = list(dict.fromkeys(r["layer"] for r in runs))
    formulas = {r["layer"]: r["formula"] for r in runs}
    settings = runs[0]["settings"]
    print(
        f"{len(runs)} runs: {settings['steps']} steps at batch {settings['batch_size']} on "
        f"{', '.join(settings['networks'])}, CIFAR-10 transfer slices of "
        f"{settings['transfer_slice']}; {sum(r['seconds'] for r in runs) / 3600:.2f} "
        f"worker-hours of training"
    )

    _proxy_report()
    print("\n## The sweep (seed 0): transfer-validation accuracy per learning rate")
    rates = sorted({r["learning_rate"] for r in runs if r["phase"] == "sweep"})
    print("| layer | " + " | ".join(f"lr {lr:g}" for lr in rates) + " | chosen |")
    print("|---|" + "---|" * (len(rates) + 1))
    chosen = {}
    for layer in layers:
        cells = []
        for lr in rates:
            [run] = [
                r
                for r in runs
                if r["layer"] == layer and r["phase"] == "sweep" and r["learning_rate"] == lr
            ] or [None]
            cells.append(
                "-"
                if run is None
                else run["status"]
                if run["transfer_val"] is None
                else f"{run['transfer_val']:.4f}"
            )
        finals = {r["learning_rate"] for r in runs if r["layer"] == layer and r["phase"] == "final"}
        chosen[layer] = finals.pop() if len(finals) == 1 else None
        print(f"| {layer} | " + " | ".join(cells) + f" | {chosen[layer]} |")

    print("\n## Seeds at the chosen rate: mean [95% t-interval]")
    print(
        "| layer | seeds | transfer-validation | transfer-test | transfer-validation, "
        "batch statistics | batch statistics minus eval mode |"
    )
    print("|---|---|---|---|---|---|")
    by_seed: dict[str, dict[int, float]] = {}
    for layer in layers:
        finals = [r for r in runs if r["layer"] == layer and r["phase"] == "final"]
        done = [r for r in finals if r["status"] == "completed"]
        by_seed[layer] = {r["seed"]: r["transfer_test"] for r in done}

        def interval(key: str, rows: list[dict] = done) -> str:
            values = [r[key] for r in rows if r.get(key) is not None]
            return interval_text(mean_interval(values).to_dict()) if values else "-"

        gaps = [
            r["transfer_val_batch_statistics"] - r["transfer_val"]
            for r in done
            if r.get("transfer_val_batch_statistics") is not None
        ]
        gap = interval_text(mean_interval(gaps).to_dict()) if gaps else "-"
        print(
            f"| {layer} | {len(done)} of {len(finals)} | {interval('transfer_val')} | "
            f"{interval('transfer_test')} | {interval('transfer_val_batch_statistics')} | "
            f"{gap} |"
        )

    if by_seed.get(REFERENCE):
        others = {
            layer: scores
            for layer, scores in by_seed.items()
            if layer != REFERENCE and set(scores) & set(by_seed[REFERENCE])
        }
        print(f"\n## Paired on transfer-test against {REFERENCE} (Holm over {len(others)})")
        print("| layer | seeds | difference [95% t] | p | p (Holm) | verdict |")
        print("|---|---|---|---|---|---|")
        for c in compare_paired(by_seed[REFERENCE], others):
            d = c.to_dict()
            p = "-" if d["p"] is None else f"{d['p']:.3g}"
            ph = "-" if d["p_holm"] is None else f"{d['p_holm']:.3g}"
            print(
                f"| {d['name']} | {len(d['seeds'])} | {interval_text(d['difference'])} | {p} "
                f"| {ph} | {d['verdict']} |"
            )

    print("\n## Learning curves: mean transfer-validation accuracy (seeds at the chosen rate)")
    steps = sorted({int(s) for r in runs for s, _ in (r["curve"] or [])})
    print("| layer | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    curves = {}
    for layer in layers:
        points = {}
        for r in runs:
            if r["layer"] == layer and r["phase"] == "final":
                for s, accuracy in r["curve"] or []:
                    points.setdefault(int(s), []).append(accuracy)
        curves[layer] = {s: statistics.fmean(v) for s, v in points.items()}
        print(
            f"| {layer} | "
            + " | ".join(f"{curves[layer][s]:.3f}" if s in curves[layer] else "-" for s in steps)
            + " |"
        )

    print("\n## Output at initialization (train mode, unit-normal input)")
    print("| layer | std | mean | min | max | formula |")
    print("|---|---|---|---|---|---|")
    for layer in layers:
        o = output_scale(formulas[layer], settings["groups"])
        print(
            f"| {layer} | {o['std']:.3f} | {o['mean']:.3f} | {o['min']:.2f} | {o['max']:.2f} "
            f"| `{formulas[layer]}` |"
        )
    if plot is not None:
        _plot(runs, layers, chosen, plot)


def _proxy_report() -> None:
    """The proxy's view of the three layers over seeds: what the search saw."""
    from evonorm_search.stats import interval_text, mean_interval

    key = operator.itemgetter("layer", "seed")
    rows = list(study.done(PROXY_DATA, lambda row: tuple(key(row))).values())
    if not rows:
        print("\n(no proxy runs: `python benchmarks/transfer_diagnosis.py proxy`)")
        return
    print(
        f"\n## The proxy ({rows[0]['steps']} steps, the tiny preset): validation accuracy, "
        "mean over networks, mean [95% t-interval] over seeds"
    )
    print("| layer | seeds | eval mode | batch statistics | per network (eval mode) |")
    print("|---|---|---|---|---|")
    for layer in dict.fromkeys(r["layer"] for r in rows):
        mine = [r for r in rows if r["layer"] == layer]

        def over_seeds(figure: str, rows: list[dict] = mine) -> str:
            means = [
                statistics.fmean(n[figure] or 0.0 for n in r["networks"].values()) for r in rows
            ]
            return interval_text(mean_interval(means).to_dict())

        networks = sorted(mine[0]["networks"])
        per_network = ", ".join(
            f"{a} {statistics.fmean(r['networks'][a]['accuracy'] or 0.0 for r in mine):.4f}"
            for a in networks
        )
        print(
            f"| {layer} | {len(mine)} | {over_seeds('accuracy')} | "
            f"{over_seeds('batch_statistics')} | {per_network} |"
        )


def _plot(runs: list[dict], layers: list[str], chosen: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), sharey=True)
    for ax, layer in zip(axes, layers, strict=True):
        for r in runs:
            if r["layer"] != layer or not r["curve"]:
                continue
            s, a = zip(*r["curve"], strict=True)
            if r["phase"] == "sweep":
                ax.plot(s, a, "--", lw=1, label=f"lr {r['learning_rate']:g} (sweep, seed 0)")
            else:
                ax.plot(
                    s,
                    a,
                    "-",
                    lw=1.6,
                    color="black",
                    alpha=0.7,
                    label=f"lr {r['learning_rate']:g}, seeds" if r["seed"] == 1 else None,
                )
        ax.set_title(layer.replace("$", r"\$"))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("transfer-validation accuracy")
    study.save(fig, path)


def main() -> None:
    parser, sub = study.commands(__doc__)
    e = sub.add_parser("export", help="the search's transfer runs to the committed data file")
    e.add_argument("--db", required=True)
    e.add_argument("--search", default=SEARCH)
    e.add_argument("--out", type=Path, default=DATA)
    p = sub.add_parser("proxy", help="the three layers on the proxy, seeds 1-3")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--data-dir", default=study.CIFAR10)
    r = sub.add_parser("report", help="the tables (Markdown) and the learning curves' plot")
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "export":
        export(args.db, args.search, args.out)
    elif args.command == "proxy":
        proxy(args.data_dir, args.processes)
    else:
        report(args.data, args.plot)


if __name__ == "__main__":
    main()
