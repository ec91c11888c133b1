"""Proxy training: speed, quality-threshold calibration, and a ranking sanity study.

    python benchmarks/proxy.py speed      [--space evonorm_b] [--steps 5]
    python benchmarks/proxy.py calibrate  [--space evonorm_b] [--seeds 2]
    python benchmarks/proxy.py ranking    [--space evonorm_b] [--seeds 3]
    python benchmarks/proxy.py backends   [--space evonorm_b]

``speed`` times training steps of every proxy architecture and preset with the eager
GraphNormAct (bn_relu) against the same network with native BatchNorm2d + ReLU, in the same
process.  ``calibrate`` trains the space's baselines to the quality checkpoint and prints
the threshold to record in the space file: chance plus half the distance from chance to the
weakest reference layer's mean checkpoint accuracy.  ``ranking`` trains bn_relu, gn_relu,
evonorm_b0, evonorm_s0, relu (no normalization) and a broken layer with the full budget for
several seeds and prints mean and std of validation accuracy per architecture and the
Kendall tau between the seeds' rankings.  ``backends`` trains layers on every architecture of
the space, on the digits as a search trial does (one thread), with the eager layer and with
the inductor backend (``torch.compile``, compile time included), and prints the seconds and
accuracies of both: the CPU backend a trial uses is the faster one.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau
from torch import nn

from evonorm_search import GraphNormAct, LayerGraph, baselines
from evonorm_search.proxy.data import load_dataset
from evonorm_search.proxy.models import build
from evonorm_search.proxy.train import quality_check, train_candidate
from evonorm_search.space import load_space

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"
BROKEN = "max(x, 0) * 0 + x * 0"  # a valid layer that passes nothing on
RANKED = ["bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0", "relu", BROKEN]
# The layers a threshold is calibrated on: those the EvoNorm paper compares with, and the
# transformer norms.  (in_relu stays at chance in these proxies: instance normalisation
# right before global average pooling removes what the classifier reads.)
REFERENCE = ("bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0", "layernorm", "rmsnorm", "dyt")


def dataset(space, root):
    if space.proxy.dataset == "cifar10" and root is None and SHARED_CIFAR.is_dir():
        root = SHARED_CIFAR
    return load_dataset(space.proxy.dataset, root=root, validation=space.proxy.validation)


def speed(space, steps: int) -> None:
    class NativeBNReLU(nn.Sequential):
        def __init__(self, c: int) -> None:
            super().__init__(nn.BatchNorm2d(c), nn.ReLU())

    graph = baselines.get("bn_relu")
    print(f"training steps, batch 64 of 3x32x32 on the CPU, {torch.get_num_threads()} threads")
    print(
        f"{'architecture':<13} {'preset':<6} {'native ms':>9} {'eager ms':>9} {'ratio':>6} "
        f"{'eager images/s':>15}"
    )
    for architecture, preset in itertools.product(
        [a for a in ("resnet", "mobilenet", "efficientnet")], ("tiny", "paper")
    ):
        times = {}
        for name, norm_act in [
            ("native", NativeBNReLU),
            ("eager", lambda c: GraphNormAct(graph, c, groups=8)),
        ]:
            torch.manual_seed(0)
            model = build(architecture, norm_act, preset=preset)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
            for i in range(steps + 1):  # the first step warms up
                if i == 1:
                    start = time.perf_counter()
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            times[name] = (time.perf_counter() - start) / steps
        print(
            f"{architecture:<13} {preset:<6} {times['native'] * 1e3:9.1f} "
            f"{times['eager'] * 1e3:9.1f} {times['eager'] / times['native']:5.1f}x "
            f"{64 / times['eager']:15.0f}",
            flush=True,
        )


def calibrate(space, root, seeds: int) -> None:
    data = dataset(space, root)
    zoo = [n for n in baselines.names() if n != "relu" and not space.violations(baselines.get(n))]
    print(
        f"quality checkpoint ({space.training.quality_steps} steps) on {space.proxy.dataset}, "
        f"preset {space.proxy.preset}, validation accuracy, {seeds} seeds"
    )
    no_threshold = dataclasses.replace(
        space, rejection=dataclasses.replace(space.rejection, quality_accuracy=0.0)
    )
    weakest = 1.0
    for name in zoo:
        start = time.perf_counter()
        per_arch = {}
        for architecture in space.proxy.architectures:
            accuracies = []
            for seed in range(seeds):
                result = quality_check(
                    baselines.get(name), architecture, data, space=no_threshold, seed=seed
                )
                accuracies.append(result.quality_accuracy or 0.0)  # diverged: 0
            per_arch[architecture] = statistics.mean(accuracies)
        if name in REFERENCE:
            weakest = min(weakest, *per_arch.values())
        seconds = (time.perf_counter() - start) / seeds
        print(
            f"  {name:<12} "
            + "  ".join(f"{a} {v:.3f}" for a, v in per_arch.items())
            + f"   ({seconds:.1f} s per quality check)",
            flush=True,
        )
    chance = 1 / data.num_classes
    threshold = chance + (weakest - chance) / 2
    print(
        f"threshold = chance + (weakest reference layer - chance) / 2 = {chance:.2f} + "
        f"({weakest:.3f} - {chance:.2f}) / 2 = {threshold:.3f}"
    )


def ranking(space, root, seeds: int) -> None:
    data = dataset(space, root)
    layers = [
        name for name in RANKED if name == BROKEN or not space.violations(baselines.get(name))
    ]
    accuracy: dict[str, dict[str, list[float]]] = {name: {} for name in layers}
    fates: dict[str, list[str]] = {name: [] for name in layers}
    for seed in range(seeds):
        for name in layers:
            graph = LayerGraph.parse(name) if name == BROKEN else baselines.get(name)
            start = time.perf_counter()
            results = train_candidate(graph, data, space=space, seed=seed)
            for architecture in space.proxy.architectures:
                # A run stopped early counts with its last validation accuracy (at the
                # checkpoint), or chance when it never reached one.
                r = results.get(architecture)
                value = r.accuracy if r is not None and r.accuracy is not None else None
                accuracy[name].setdefault(architecture, []).append(
                    value if value is not None else 1 / data.num_classes
                )
            statuses = {r.status for r in results.values()}
            fates[name].append(statuses.pop() if len(statuses) == 1 else "mixed")
            print(
                f"  seed {seed} {name:<22} {fates[name][-1]:<10} "
                f"{time.perf_counter() - start:6.1f} s",
                flush=True,
            )
    archs = space.proxy.architectures
    print(
        f"\nvalidation accuracy after {space.training.steps} steps ({space.proxy.dataset}, "
        f"preset {space.proxy.preset}, {seeds} seeds; rejected runs count at the checkpoint)"
    )
    print(f"{'layer':<24}" + "".join(f"{a:>17}" for a in archs) + f"{'mean':>8}  fate")
    for name in layers:
        cells = [
            f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}".rjust(17)
            for v in (accuracy[name][a] for a in archs)
        ]
        mean = statistics.mean(statistics.mean(accuracy[name][a]) for a in archs)
        print(
            f"{name:<24}" + "".join(cells) + f"{mean:8.3f}  {', '.join(sorted(set(fates[name])))}"
        )
    per_seed = [
        [statistics.mean(accuracy[n][a][s] for a in archs) for n in layers] for s in range(seeds)
    ]
    taus = [
        kendalltau(per_seed[i], per_seed[j]).statistic
        for i, j in itertools.combinations(range(seeds), 2)
    ]
    print(
        f"Kendall tau of the layer ranking between seeds: {', '.join(f'{t:.2f}' for t in taus)}"
        f" (mean {statistics.mean(taus):.2f})"
    )


def backends(space_name: str) -> None:
    from evonorm_search.search.trial import effective_space

    space = effective_space(space_name, "digits", None)
    data = load_dataset("digits", validation=space.proxy.validation)
    torch.set_num_threads(1)  # a trial with --cpus-per-trial 1
    print(
        f"one candidate's proxy training on the digits ({', '.join(space.proxy.architectures)}"
        f", {space.training.steps} steps each), 1 thread"
    )
    print(
        f"{'layer':<12} {'eager s':>8} {'inductor s':>11} {'ratio':>6}  accuracy eager / inductor"
    )
    for name in ("bn_relu", "gn_relu", "evonorm_s0"):
        seconds, accuracy = {}, {}
        for backend in ("eager", "inductor"):
            torch._dynamo.reset()
            start = time.perf_counter()
            runs = train_candidate(baselines.get(name), data, space=space, backend=backend)
            seconds[backend] = time.perf_counter() - start
            accuracy[backend] = statistics.mean(run.accuracy for run in runs.values())
        print(
            f"{name:<12} {seconds['eager']:8.1f} {seconds['inductor']:11.1f} "
            f"{seconds['inductor'] / seconds['eager']:5.2f}x  "
            f"{accuracy['eager']:.3f} / {accuracy['inductor']:.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["speed", "calibrate", "ranking", "backends"])
    parser.add_argument("--space", default="evonorm_b")
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 batches directory")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (speed)")
    args = parser.parse_args()
    space = load_space(args.space)
    if args.part == "speed":
        speed(space, args.steps)
    elif args.part == "calibrate":
        calibrate(space, args.data, args.seeds or 2)
    elif args.part == "backends":
        backends(args.space)
    else:
        ranking(space, args.data, args.seeds or 3)


if __name__ == "__main__":
    main()
