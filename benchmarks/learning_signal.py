"""Calibrate the learning-signal stage on real candidates whose quality verdicts are known.

    python benchmarks/learning_signal.py collect [--count 600] [--processes 2] [--hours H]
    python benchmarks/learning_signal.py full [--sample 40] [--processes 2]
    python benchmarks/learning_signal.py calibrate [--write]

The default protocol (``evonorm_b`` on CIFAR-10, the tiny preset, seed 0).  ``collect`` draws
``--count`` candidates by a seeded procedure (candidate i from ``default_rng([SEED, i])``:
with probability 0.85 a zoo layer of the space mutated once (or, one time in five, twice), as
evolution's children are; else a random graph, as a random start proposes; drawn
again until it passes screening, stages 1-5, and is functionally new) and runs each through
the search's own stages: the learning signal measured on the first steps of the first
architecture (rejecting nothing) and the full quality check (every architecture to its
checkpoint, stopping at the first failure).  Every finished candidate is appended to
``benchmarks/data/learning_signal/measured.jsonl`` at once (``full.jsonl`` beside it for
``full``); a rerun skips what is done.

The sets are fixed before any data is seen: candidate i is in the **calibration** set when
``i % 3 == 0`` and in the **report** set otherwise.  ``calibrate`` chooses thresholds on the
calibration set only (per figure, a margin beyond the worst quality-passing layer: half its
loss drop below the smallest drop, a tenth of the smallest gradient and spread, ten times
the largest gradient) and reports, on the report set: the rejection rate, the false-rejection
rate among quality-passing layers with its Clopper-Pearson 95% upper bound (one-sided), the
same among the best quarter of fully trained layers, and the cost per candidate.  ``full``
trains to the end the report set's quality-passing layers that are needed for the best
quarter: a seeded sample of ``--sample`` (to estimate the quarter's cut-off) and every one
that the thresholds reject; where they reject none, none of the best quarter is rejected
either, and nothing needs training.  ``--write`` puts the thresholds in
``search_spaces/evonorm_b.toml``.
"""

from __future__ import annotations

import argparse
import functools
import operator
import statistics
import time
from pathlib import Path

import study  # benchmarks/: the script's own folder

# The measurements are kept in the repository: they took hours, and the space file's
# thresholds and the figures of docs/benchmarks.md come from them.
OUT = Path(__file__).resolve().parent / "data" / "learning_signal"
SPACE = "evonorm_b"
SEED = 20261202
MUTANT_SHARE = 0.85
INDEX = operator.itemgetter("index")


def _describe(row: dict) -> str:
    return f"(#{row['index']}: {row.get('quality', 'full')})"


def calibration_set(index: int) -> bool:
    return index % 3 == 0


@functools.cache
def _space():
    from evonorm_search.search.trial import effective_space

    return effective_space(SPACE, "cifar10", None)


def candidates(count: int) -> list[dict]:
    """The seeded candidate list (cheap: screening only), the same on every run."""
    import numpy as np

    from evonorm_search.mutation import mutate, random_graph
    from evonorm_search.rejection import Funnel
    from evonorm_search.search.strategies import zoo_layers

    space = _space()
    zoo = zoo_layers(space)
    funnel = Funnel(space)
    seen: set[str] = set()
    out = []
    for i in range(count):
        rng = np.random.default_rng([SEED, i])
        while True:
            if rng.random() < MUTANT_SHARE:
                name, graph = zoo[int(rng.integers(len(zoo)))]
                steps = 1 if rng.random() < 0.8 else 2
                for _ in range(steps):
                    graph, _ = mutate(graph, space, rng)
                kind = f"mutant of {name} ({steps})"
            else:
                graph, kind = random_graph(space, rng), "random"
            screening = funnel.screen(graph)
            if screening.passed and screening.functional_hash not in seen:
                seen.add(screening.functional_hash)
                break
        out.append({"index": i, "kind": kind, "graph": graph.to_json(), "formula": graph.formula()})
    return out


_DATA = None


def _data(data_dir: str):
    global _DATA
    if _DATA is None:
        from evonorm_search.proxy.data import load_dataset

        _DATA = load_dataset("cifar10", root=data_dir, validation=_space().proxy.validation)
    return _DATA


def measure(job: tuple[dict, str]) -> dict:
    """One candidate: its learning signal and its quality verdict."""
    import torch

    from evonorm_search.graph import LayerGraph
    from evonorm_search.proxy.train import CandidateTraining

    torch.set_num_threads(1)
    candidate, data_dir = job
    space = _space()
    graph = LayerGraph.from_json(candidate["graph"])
    start = time.perf_counter()
    training = CandidateTraining(graph, _data(data_dir), space=space, seed=0)
    signal = training.signal()
    signal_s = time.perf_counter() - start
    if signal.status == "diverged":
        verdict = {"quality": "diverged", "architecture": signal.architecture}
    else:
        stopped = training.quality()
        verdict = (
            {"quality": "passed"}
            if stopped is None
            else {"quality": stopped.status, "architecture": stopped.architecture}
        )
    verdict["quality_accuracy"] = {a: run.quality_accuracy for a, run in training._runs.items()}
    return {
        **candidate,
        "signal": signal.figures(),
        "signal_s": round(signal_s, 3),
        "quality_s": round(time.perf_counter() - start, 3),
        **verdict,
    }


def train_full(job: tuple[dict, str]) -> dict:
    """One quality-passing candidate trained to the end: its fitness (mean accuracy)."""
    import torch

    from evonorm_search.graph import LayerGraph
    from evonorm_search.proxy.train import train_candidate

    torch.set_num_threads(1)
    candidate, data_dir = job
    start = time.perf_counter()
    runs = train_candidate(
        LayerGraph.from_json(candidate["graph"]), _data(data_dir), space=_space(), seed=0
    )
    scores = {a: r.accuracy for a, r in runs.items()}
    ok = all(r.status == "completed" for r in runs.values())
    return {
        "index": candidate["index"],
        "scores": scores if ok else None,
        "fitness": statistics.mean(scores.values()) if ok else None,
        "seconds": round(time.perf_counter() - start, 3),
    }


# -- calibration -----------------------------------------------------------------------


def clopper_pearson_upper(errors: int, n: int, level: float = 0.95) -> float:
    """One-sided upper bound of a binomial proportion."""
    from scipy.stats import beta

    if n == 0:
        return 1.0
    return 1.0 if errors >= n else float(beta.ppf(level, errors + 1, n - errors))


def choose_thresholds(rows: list[dict]) -> dict[str, float]:
    """Conservative thresholds from the calibration set's quality-passing layers: each
    figure a margin beyond the worst of them (see the module docstring)."""
    passing = [r["signal"] for r in rows if r["quality"] == "passed"]
    drops = [s["loss_drop"] for s in passing]
    gradients = [g for s in passing for g in s["input_gradient"]]
    spreads = [v for s in passing for v in s["output_spread"]]
    worst_drop = min(drops)
    return {
        "min_loss_drop": round(worst_drop - 0.5 * abs(worst_drop), 4),
        "min_input_gradient": float(f"{min(gradients) / 10:.2g}"),
        "max_input_gradient": float(f"{max(gradients) * 10:.2g}"),
        "min_output_spread": float(f"{min(spreads) / 10:.2g}"),
    }


def rejects(signal: dict, thresholds: dict[str, float]) -> bool:
    """Whether the stage, with ``thresholds``, rejects a measured signal (the product's
    own rule, ``signal_problem``).  A divergence stops the run anyway: not a rejection."""
    import dataclasses

    from evonorm_search.proxy.train import SignalResult, signal_problem

    if signal["status"] == "diverged":
        return False
    result = SignalResult(
        signal["architecture"],
        "passed",
        signal["steps"],
        signal["seconds"],
        signal["loss_drop"],
        tuple(signal["input_gradient"]),
        tuple(signal["output_spread"]),
    )
    space = _space()
    space = dataclasses.replace(space, signal=dataclasses.replace(space.signal, **thresholds))
    return signal_problem(result, space) is not None


def report(rows: list[dict], thresholds: dict[str, float], full: dict[int, dict]) -> dict:
    n = len(rows)
    rejected = [r for r in rows if rejects(r["signal"], thresholds)]
    passing = [r for r in rows if r["quality"] == "passed"]
    false = [r for r in passing if rejects(r["signal"], thresholds)]
    quality_rejected = [r for r in rows if r["quality"] != "passed"]
    caught = [r for r in quality_rejected if rejects(r["signal"], thresholds)]
    # Worker time: a rejected layer costs its signal steps instead of its quality check.
    before = sum(r["quality_s"] for r in rows)
    after = sum(r["signal_s"] if rejects(r["signal"], thresholds) else r["quality_s"] for r in rows)
    trained = [
        full[r["index"]]["fitness"]
        for r in passing
        if r["index"] in full and full[r["index"]]["fitness"] is not None
    ]
    cut = statistics.quantiles(trained, n=4)[2] if len(trained) >= 4 else None
    best_false = [
        r
        for r in false
        if r["index"] in full and cut is not None and (full[r["index"]]["fitness"] or 0) >= cut
    ]
    best_n = len(passing) // 4
    return {
        "candidates": n,
        "rejected": len(rejected),
        "quality_passing": len(passing),
        "false_rejections": len(false),
        "false_rejection_bound": clopper_pearson_upper(len(false), len(passing)),
        "quality_rejected": len(quality_rejected),
        "caught_early": len(caught),
        "best_quarter_cut": cut,
        "best_quarter": best_n,
        "fully_trained": len(trained),
        "best_quarter_false": len(best_false),
        "best_quarter_bound": clopper_pearson_upper(len(best_false), best_n),
        "unknown_false": sum(1 for r in false if r["index"] not in full),
        "by_kind": {
            kind: {
                "candidates": len(group),
                "quality_passing": sum(r["quality"] == "passed" for r in group),
                "rejected": sum(rejects(r["signal"], thresholds) for r in group),
            }
            for kind in ("mutant", "random")
            for group in [[r for r in rows if r["kind"].startswith(kind)]]
        },
        "signal_s": statistics.mean(r["signal_s"] for r in rows),
        "quality_s": statistics.mean(r["quality_s"] for r in rows),
        "worker_s_before": before,
        "worker_s_after": after,
    }


def print_report(name: str, r: dict) -> None:
    print(f"\n{name}: {r['candidates']} candidates, {r['quality_passing']} pass the quality check")
    print(
        f"  rejected by the signal stage: {r['rejected']} ({r['rejected'] / r['candidates']:.1%}"
        f"); of the {r['quality_rejected']} the quality check rejects or that diverge, "
        f"{r['caught_early']} caught early"
    )
    print(
        f"  false rejections among quality-passing: {r['false_rejections']} of "
        f"{r['quality_passing']} ({r['false_rejections'] / max(r['quality_passing'], 1):.1%}; "
        f"Clopper-Pearson 95% upper bound {r['false_rejection_bound']:.1%})"
    )
    if r["false_rejections"] == 0:
        print(
            f"  best quarter: none rejected, as no quality-passing layer is (0 of "
            f"{r['best_quarter']}, bound {r['best_quarter_bound']:.1%})"
        )
    elif r["best_quarter_cut"] is None:
        print("  best quarter: not yet (run `full`)")
    else:
        print(
            f"  best quarter (fitness >= {r['best_quarter_cut']:.3f}, estimated from "
            f"{r['fully_trained']} fully trained): {r['best_quarter_false']} of "
            f"{r['best_quarter']} rejected (bound {r['best_quarter_bound']:.1%})"
            + (
                f"; {r['unknown_false']} false rejections not yet fully trained"
                if r["unknown_false"]
                else ""
            )
        )
    for kind, k in r["by_kind"].items():
        print(
            f"  {kind}s: {k['candidates']}, {k['quality_passing']} quality-passing, "
            f"{k['rejected']} rejected by the signal stage"
        )
    print(
        f"  cost per candidate: signal {r['signal_s']:.2f} s, quality check "
        f"{r['quality_s']:.1f} s (1 core); worker time on these candidates "
        f"{r['worker_s_before'] / 60:.0f} -> {r['worker_s_after'] / 60:.0f} min "
        f"({1 - r['worker_s_after'] / r['worker_s_before']:.0%} less)"
    )


def write_thresholds(thresholds: dict[str, float], space_file: Path) -> None:
    """Replace the [signal] section of ``space_file`` (appended where there is none)."""
    text = space_file.read_text()
    section = [
        "[signal]",
        "# Calibrated: `python benchmarks/learning_signal.py calibrate` (see the README).",
        "steps = 20",
        "window = 5",
    ]
    section += [f"{k} = {v!r}" for k, v in thresholds.items()]
    head, found, tail = text.partition("\n[signal]\n")
    if found:
        rest = tail.split("\n[", 1)
        tail = "\n[" + rest[1] if len(rest) > 1 else ""
        text = head + "\n" + "\n".join(section) + "\n" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    space_file.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["collect", "full", "calibrate"])
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--hours", type=float, default=None, help="stop after this long")
    parser.add_argument("--sample", type=int, default=40, help="full: a seeded sample")
    parser.add_argument("--write", action="store_true", help="calibrate: into the space file")
    parser.add_argument("--data-dir", default=study.CIFAR10)
    args = parser.parse_args()
    from evonorm_search.search.driver import check_data

    check_data("cifar10", args.data_dir)
    OUT.mkdir(parents=True, exist_ok=True)
    measured_path, full_path = OUT / "measured.jsonl", OUT / "full.jsonl"
    measured = study.done(measured_path, INDEX, repair=args.part == "collect")
    if args.part == "collect":
        todo = [c for c in candidates(args.count) if c["index"] not in measured]
        study.run(
            measure,
            [(c, args.data_dir) for c in todo],
            measured_path,
            args.processes,
            args.hours,
            _describe,
        )
        return
    rows = [measured[i] for i in sorted(measured)]
    calibration = [r for r in rows if calibration_set(r["index"])]
    thresholds = choose_thresholds(calibration)
    full = study.done(full_path, INDEX, repair=args.part == "full")
    if args.part == "full":
        import numpy as np

        passing = [r for r in rows if not calibration_set(r["index"]) and r["quality"] == "passed"]
        false = {r["index"] for r in passing if rejects(r["signal"], thresholds)}
        if not false:  # then none of the best quarter is rejected either: nothing to train
            print("no quality-passing layer of the report set is rejected: nothing to train")
            return
        rng = np.random.default_rng(SEED)
        order = rng.permutation(len(passing))
        needed = {passing[k]["index"] for k in order[: args.sample]} | false
        todo = [r for r in passing if r["index"] in needed and r["index"] not in full]
        study.run(
            train_full,
            [(r, args.data_dir) for r in todo],
            full_path,
            args.processes,
            args.hours,
            _describe,
        )
        return
    print(f"thresholds from the calibration set ({len(calibration)} candidates):")
    for k, v in thresholds.items():
        print(f"  {k} = {v!r}")
    print_report("calibration set", report(calibration, thresholds, full))
    print_report(
        "report set", report([r for r in rows if not calibration_set(r["index"])], thresholds, full)
    )
    if args.write:
        path = Path(__file__).resolve().parents[1] / "search_spaces" / f"{SPACE}.toml"
        write_thresholds(thresholds, path)
        print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
