"""Throughput of the screening funnel, and a collision study of the functional hash.

Part 1 mutates a population (parents drawn uniformly, survivors of all five stages join it
and the oldest member leaves) and screens every child, on one CPU thread.  It prints
candidates/s through stages 1-4, with and without the cost of mutating, the cost of
stage 5, where candidates stop, the structural-duplicate and FEC hit rates and each stage's
share of the wall clock.  No training happens here: a survivor's functional hash enters the
FEC as soon as it survives, standing in for the fitness training would store.

Part 2 hashes random valid graphs and compares distinct structural and functional hashes.
Every group of structurally different graphs sharing a functional hash is probed again
with another seed: a group that splits was a false merge.  The false-split rate is the
share of graphs whose hash changes under a semantics-preserving rewrite (e -> -(-e),
max(e, e), e + 0, (e + v1) - v1 on a random live node).

    python benchmarks/screening.py [--space evonorm_b] [--candidates 5000] [--graphs 100000]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np
import torch

from evonorm_search import GraphNormAct
from evonorm_search.graph import NUM_INITIAL, LayerGraph, Node
from evonorm_search.hashing import CachedFitness, probe, probe_outputs
from evonorm_search.mutation import mutate, random_graph
from evonorm_search.rejection import STAGES, Funnel, check_numeric
from evonorm_search.space import load_space

SCREENING_STAGES = STAGES[:4]


def run_funnel(space, candidates: int, population_size: int, seed: int, stability: bool) -> None:
    rng = np.random.default_rng(seed)
    funnel = Funnel(space, stability=stability)
    population = collections.deque(maxlen=population_size)
    while len(population) < population_size:  # a screened random initial population
        graph = random_graph(space, rng)
        if funnel.screen(graph).passed:
            population.append(graph)
    funnel.seen.clear()  # measure the loop below on its own
    seconds = collections.Counter()
    fates = collections.Counter()
    reached = collections.Counter()
    stage5_ms = []
    start = time.perf_counter()
    for i in range(candidates):
        t = time.perf_counter()
        child, _ = mutate(population[int(rng.integers(len(population)))], space, rng)
        seconds["mutation"] += time.perf_counter() - t
        result = funnel.screen(child)
        seconds.update(result.seconds)
        for verdict in result.verdicts:
            reached[verdict.stage] += 1
        fates[(result.fate.stage, result.fate.reason or "passed")] += 1
        if "stability" in result.seconds:
            stage5_ms.append(result.seconds["stability"] * 1e3)
        if result.passed:
            population.append(child)
            fitness = CachedFitness(candidate=str(i))  # stands in for the trained fitness
            funnel.cache.put(result.functional_hash, funnel.proxy_key, fitness)
    wall = time.perf_counter() - start
    screening = sum(seconds[s] for s in SCREENING_STAGES)

    stages = "all five stages" if stability else "stages 1-4 only (survivors of 4 join)"
    print(
        f"## funnel, {stages}: {candidates} mutated candidates, population "
        f"{population_size}, space {space.name}, {torch.get_num_threads()} thread"
    )
    print(f"stages 1-4:              {candidates / screening:8.0f} candidates/s")
    print(
        f"stages 1-4 + mutation:   {candidates / (screening + seconds['mutation']):8.0f} "
        "candidates/s"
    )
    if stage5_ms:
        p95 = np.percentile(stage5_ms, 95)
        print(
            f"stage 5:                 {statistics.mean(stage5_ms):8.1f} ms mean, "
            f"{p95:.1f} ms p95 over {len(stage5_ms)} candidates"
        )
    print(f"whole loop:              {candidates / wall:8.0f} candidates/s (wall clock)")
    print("\nwhere candidates stop:")
    for (stage, reason), count in sorted(fates.items(), key=lambda kv: STAGES.index(kv[0][0])):
        print(f"  {stage:<11} {reason:<22} {count / candidates:7.1%}")
    structural = fates[("duplicate", "structural_duplicate")] / reached["duplicate"]
    fec = fates[("functional", "functional_duplicate")] / reached["functional"]
    print(f"structural-duplicate hit rate {structural:.1%} of the candidates reaching stage 2")
    print(f"FEC hit rate                  {fec:.1%} of the candidates reaching stage 3")
    total = sum(seconds.values())
    print("\nwall-clock share:")
    for name in ("mutation", *STAGES):
        print(f"  {name:<11} {seconds[name] / total:7.1%}  ({seconds[name]:.2f} s)")


REWRITES = ("-(-e)", "max(e, e)", "e + 0", "(e + v1) - v1")


def equivalent_rewrite(graph: LayerGraph, rng: np.random.Generator) -> tuple[LayerGraph, str]:
    """``graph`` with a random live node e replaced by an expression equal to it (the last
    rewrite only up to rounding), and the rewrite's name."""
    live = sorted(i for i in graph.live if i >= NUM_INITIAL)
    target = live[int(rng.integers(len(live)))]
    kind = int(rng.integers(4))
    base = target + 1  # the wrapper's nodes follow the target
    wrapper = [
        [Node("neg", (target,)), Node("neg", (base,))],
        [Node("max", (target, target))],
        [Node("add", (target, 1))],
        [Node("add", (target, 3)), Node("neg", (3,)), Node("add", (base, base + 1))],
    ][kind]
    out, shift = base + len(wrapper) - 1, len(wrapper)
    nodes = list(graph.nodes[: base - NUM_INITIAL]) + wrapper
    for n in graph.nodes[base - NUM_INITIAL :]:  # later nodes read the wrapper, not target
        inputs = tuple(out if j == target else j + shift if j >= base else j for j in n.inputs)
        nodes.append(Node(n.op, inputs, n.axis))
    return LayerGraph(tuple(nodes)), REWRITES[kind]


def same_outputs(a: LayerGraph, b: LayerGraph, seed: int) -> bool:
    return all(
        np.allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True)
        for x, y in zip(probe_outputs(a, seed=seed), probe_outputs(b, seed=seed), strict=True)
    )


# Other shapes and group counts than the probe's (N, C, S) = (4, 6, 5) with 3 groups.
ELSEWHERE = [((6, 12, 7), 4), ((3, 10, 3, 3), 5), ((16, 8), 2)]


def same_layer_outputs(a: LayerGraph, b: LayerGraph, seed: int) -> bool:
    """Whether GraphNormAct computes the same for ``a`` and ``b`` at other shapes: three
    training steps on random inputs, then eval mode, with random v0, v1 (float64)."""
    for shape, groups in ELSEWHERE:
        g = torch.Generator().manual_seed(seed)
        v0, v1 = (torch.randn(shape[1], generator=g, dtype=torch.float64) for _ in range(2))
        xs = [torch.randn(shape, generator=g, dtype=torch.float64) * s + s for s in (1, 0.1, 3)]
        layers = [
            GraphNormAct(graph, shape[1], groups=groups, affine=False, dtype=torch.float64)
            for graph in (a, b)
        ]
        for layer in layers:
            with torch.no_grad():
                layer.v0.copy_(v0)
                layer.v1.copy_(v1)
        with torch.no_grad():
            for mode in ("train", "eval"):
                for layer in layers:
                    layer.train(mode == "train")
                for x in xs:
                    ya, yb = (layer(x).numpy() for layer in layers)
                    if not np.allclose(ya, yb, rtol=1e-6, atol=1e-9, equal_nan=True):
                        return False
    return True


def collision_study(space, graphs: int, rewrites: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    members: dict[str, dict[str, LayerGraph]] = collections.defaultdict(dict)
    trainable: dict[str, bool] = {}  # the class passes stage 4, so the FEC may serve it
    structural = set()
    start = time.perf_counter()
    for _ in range(graphs):
        g = random_graph(space, rng)
        result = probe(g)
        s = g.structural_hash()
        structural.add(s)
        members[result.functional_hash].setdefault(s, g)
        trainable[result.functional_hash] = check_numeric(result, space).passed
    elapsed = time.perf_counter() - start
    shared = {h: list(m.values()) for h, m in members.items() if len(m) > 1}
    false_merges, rounding = [], 0
    for h, group in shared.items():
        if len({probe(g, seed=seed + 1).functional_hash for g in group}) == 1:
            continue
        # The new probe's hashes disagree: a false merge, unless only rounding at the 24th
        # bit split them (outputs equal to a relative 1e-6, NaN and inf included).
        different = [g for g in group[1:] if not same_outputs(group[0], g, seed + 1)]
        if different:
            false_merges.append((h, trainable[h], [group[0].formula(), different[0].formula()]))
        else:
            rounding += 1
    trainable_classes = sum(trainable.values())
    print(f"\n## collision study: {graphs} random valid graphs of {space.name} ({elapsed:.0f} s)")
    print(f"distinct structural hashes {len(structural):8d}")
    print(f"distinct functional hashes {len(members):8d} ({trainable_classes} passing stage 4)")
    print(
        f"functional classes holding several structures: {len(shared)}; re-probed with "
        f"seed {seed + 1}: {len(false_merges)} false merges "
        f"({sum(t for _, t, _ in false_merges)} among classes passing stage 4), "
        f"{rounding} classes "
        "whose hashes only rounding split"
    )
    for h, passes, (first, other) in false_merges[:5]:
        print(f"  false merge {h} (passes stage 4: {passes}): {first!r} vs {other!r}")
    elsewhere = [
        (h, group[0].formula(), g.formula())
        for h, group in shared.items()
        for g in group[1:]
        if not same_layer_outputs(group[0], g, seed)
    ]
    print(
        f"the same classes through GraphNormAct at shapes {[s for s, _ in ELSEWHERE]}: "
        f"{len(elsewhere)} pairs differ"
    )
    for h, first, other in elsewhere[:5]:
        print(f"  {h}: {first!r} vs {other!r}")
    if not rewrites:
        return
    tried, split = collections.Counter(), collections.Counter()
    for _ in range(rewrites):
        g = random_graph(space, rng)
        rewritten, kind = equivalent_rewrite(g, rng)
        tried[kind] += 1
        split[kind] += probe(rewritten).functional_hash != probe(g).functional_hash
    total = sum(split.values())
    print(f"false splits under equivalent rewrites: {total} of {rewrites} ({total / rewrites:.2%})")
    for kind in REWRITES:
        print(
            f"  {kind:<14} {split[kind]:5d} of {tried[kind]:5d} ({split[kind] / tried[kind]:.2%})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="evonorm_b")
    parser.add_argument("--candidates", type=int, default=5000)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--graphs", type=int, default=100_000)
    parser.add_argument("--rewrites", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # "one core"
    space = load_space(args.space)
    if args.candidates:
        run_funnel(space, args.candidates, args.population, args.seed, stability=False)
        print()
        run_funnel(space, args.candidates, args.population, args.seed, stability=True)
    if args.graphs:
        collision_study(space, args.graphs, args.rewrites, args.seed)


if __name__ == "__main__":
    main()
