"""The screening funnel: stages 1-5 of DESIGN.md, cheapest first.

1. ``static``: the candidate parses, fits the space (ops, axes, size) and is a layer
   (output shaped like x, depending on x).
2. ``duplicate``: its canonical form was seen before (structural hash).
3. ``functional``: a functionally equal candidate was trained already (FEC hit: its
   fitness is reused) or is being trained (in flight); the candidate is not trained.
4. ``numeric``: on the hash probe at its initial parameters, the output is finite, varies
   with the input and keeps a sane scale.
5. ``stability``: adversarial gradient ascent on the weights of a tiny network cannot
   drive the gradient-to-weight norm ratio past the space's threshold.

Quality rejection (too low accuracy after a short training) belongs to training.  Every
candidate ends with the verdict of the stage that stopped it (or of the last stage), with
a machine-readable reason and the measured values, so that the store can keep its fate.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evonorm_search.errors import GraphError
from evonorm_search.graph import X_CLASS, LayerGraph, as_graph
from evonorm_search.hashing import (
    LRU,
    CachedFitness,
    FunctionalCache,
    ProbeResult,
    probe,
    proxy_key,
)
from evonorm_search.layer import GraphNormAct
from evonorm_search.mutation import random_graph
from evonorm_search.space import SearchSpace

__all__ = [
    "REASONS",
    "STAGES",
    "Funnel",
    "Screening",
    "Verdict",
    "check_numeric",
    "check_stability",
    "check_static",
    "stability_ratios",
]

STAGES = ("static", "duplicate", "functional", "numeric", "stability")
REASONS: Mapping[str, tuple[str, ...]] = {
    "static": ("malformed", "too_large", "outside_space", "wrong_shape_class", "independent_of_x"),
    "duplicate": ("structural_duplicate",),
    "functional": ("functional_duplicate",),
    "numeric": ("non_finite", "constant_output", "exploding_output"),
    "stability": ("unstable", "non_finite_gradient"),
}

# The stability test: a tiny network with the candidate at both normalization sites,
# STABILITY_STEPS steps of normalized gradient ascent on all its weights, each step of
# STABILITY_STEP_SIZE times the weight norm, maximising ||dL/dtheta|| / ||theta||.  Chosen
# on this machine to cost about 20 ms: the baselines peak at ratios below 5, explosive
# layers (x * square(x), x / (x - mean_batch(x))) reach 1e10 or NaN.
STABILITY_STEPS = 5
STABILITY_STEP_SIZE = 0.18
STABILITY_BATCH = 4
STABILITY_WIDTH = 8


@dataclass(frozen=True)
class Verdict:
    """What one stage decided.  ``reason`` is one of ``REASONS[stage]`` when it rejects;
    ``values`` (read-only) are the figures the stage measured."""

    stage: str
    passed: bool
    reason: str | None = None
    detail: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))


@dataclass
class Screening:
    """A candidate's way through the funnel."""

    graph: LayerGraph | None
    verdicts: list[Verdict] = field(default_factory=list)
    structural_hash: str | None = None
    functional_hash: str | None = None
    fitness: CachedFitness | None = None  # the reused fitness of an FEC hit
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per stage

    @property
    def fate(self) -> Verdict:
        """The last verdict: the stage that stopped the candidate, or the last one run."""
        return self.verdicts[-1]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)


def _reject(stage: str, reason: str, detail: str, **values: Any) -> Verdict:
    assert reason in REASONS[stage], reason  # a programming error, not user input
    return Verdict(stage, False, reason, detail, values)


def check_static(candidate: Any, space: SearchSpace) -> tuple[Verdict, LayerGraph | None]:
    """Stage 1: parse (a LayerGraph, graph JSON or formula), then the space's limits, then
    the layer's validity."""
    try:
        graph = as_graph(candidate)
    except GraphError as e:
        return _reject("static", "malformed", str(e)), None
    if len(graph) > space.graph.max_nodes:
        return _reject(
            "static",
            "too_large",
            f"{len(graph)} nodes, above the space's {space.graph.max_nodes}",
            nodes=len(graph),
        ), graph
    problems = space.violations(graph)
    if problems:
        return _reject("static", "outside_space", "; ".join(problems)), graph
    problem = graph.layer_problem()
    if problem is not None:
        shaped_like_x = graph.shape_classes[graph.output] == X_CLASS
        reason = "independent_of_x" if shaped_like_x else "wrong_shape_class"
        return _reject("static", reason, problem), graph
    return Verdict("static", True, values={"nodes": len(graph)}), graph


def check_numeric(result: ProbeResult, space: SearchSpace) -> Verdict:
    """Stage 4: judge the probe's output at the initial parameters."""
    # NaN figures (of a non-finite output) are stored as None, which JSON can hold.
    figures = {"spread": result.spread, "scale": result.scale}
    values = {k: v if math.isfinite(v) else None for k, v in figures.items()}
    limits = space.rejection
    if not result.finite:
        return _reject("numeric", "non_finite", "NaN or inf on the probe", **values)
    if result.spread < limits.min_output_spread:
        return _reject(
            "numeric",
            "constant_output",
            f"output's relative spread {result.spread:.3g} below {limits.min_output_spread:g}",
            **values,
        )
    if result.scale > limits.max_output_scale:
        return _reject(
            "numeric",
            "exploding_output",
            f"output/input scale {result.scale:.3g} above {limits.max_output_scale:g}",
            **values,
        )
    return Verdict("numeric", True, values=values)


class _TinyNet(nn.Module):
    """conv1x1 -> candidate -> conv1x1 -> candidate -> mean -> linear, for images or tokens.

    Pointwise convolutions mix channels around the candidate as a network would; their
    double backward is a fraction of a 3x3 convolution's, which kept stage 5 under 50 ms.
    """

    def __init__(self, graph: LayerGraph, space: SearchSpace) -> None:
        super().__init__()
        conv = nn.Conv2d if space.tensor == "image" else nn.Conv1d
        # Groups of at least two channels, so that group statistics differ from instance ones.
        w, groups = STABILITY_WIDTH, min(space.proxy.groups, STABILITY_WIDTH // 2)
        self.body = nn.Sequential(
            conv(3, w, 1, bias=False),
            GraphNormAct(graph, w, groups=groups),
            conv(w, w, 1, bias=False),
            GraphNormAct(graph, w, groups=groups),
        )
        self.head = nn.Linear(w, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(2).mean(-1))


def stability_ratios(graph: LayerGraph, space: SearchSpace, *, seed: int = 0) -> list[float]:
    """||dL/dtheta|| / ||theta|| before each of ``STABILITY_STEPS`` adversarial steps.

    Each step moves all weights theta by ``STABILITY_STEP_SIZE * ||theta||`` along the
    gradient of that ratio (a Hessian-vector product), the direction that grows it fastest.
    Stops early at a non-finite ratio.
    """
    # Seeded without touching the caller's random state, with gradients even where the
    # caller disabled them, and denormals flushed (near-zero gradients slow the CPU ~40x).
    with (
        torch.random.fork_rng(devices=[]),
        torch.inference_mode(False),
        torch.enable_grad(),
        _flush_denormals(),
    ):
        return _ascend(graph, space, seed)


@contextlib.contextmanager
def _flush_denormals() -> Iterator[None]:
    # torch has no getter: a denormal times 1 is 0 exactly when flushing is on.
    was_flushing = bool(torch.tensor([1e-40]) * 1.0 == 0)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)


def _ascend(graph: LayerGraph, space: SearchSpace, seed: int) -> list[float]:
    torch.manual_seed(seed)
    net = _TinyNet(graph, space)
    shape = (STABILITY_BATCH, 3, 8, 8) if space.tensor == "image" else (STABILITY_BATCH, 3, 16)
    x = torch.randn(shape)
    labels = torch.randint(0, 10, (STABILITY_BATCH,))
    params = list(net.parameters())
    ratios = []
    for _ in range(STABILITY_STEPS):
        loss = F.cross_entropy(net(x), labels)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        grad_norm = torch.sqrt(sum(g.square().sum() for g in grads if g is not None))
        weight_norm = torch.sqrt(sum(p.detach().square().sum() for p in params))
        ratio = grad_norm / weight_norm
        ratios.append(float(ratio.detach()))
        if not math.isfinite(ratios[-1]) or not ratio.requires_grad:
            break
        ascent = torch.autograd.grad(ratio, params, allow_unused=True)
        norm = torch.sqrt(sum(a.square().sum() for a in ascent if a is not None))
        if not torch.isfinite(norm) or norm == 0:
            break
        with torch.no_grad():
            for p, a in zip(params, ascent, strict=True):
                if a is not None:
                    p.add_(a, alpha=float(STABILITY_STEP_SIZE * weight_norm / norm))
    return ratios


def check_stability(graph: LayerGraph, space: SearchSpace) -> Verdict:
    """Stage 5: reject when adversarial ascent drives the ratio past the space's limit."""
    ratios = stability_ratios(graph, space)
    # The worst ratio: a NaN or inf if there is one (max() would skip a NaN).
    worst = next((r for r in ratios if not math.isfinite(r)), max(ratios))
    values = {"max_ratio": worst if math.isfinite(worst) else None, "steps": len(ratios)}
    if not math.isfinite(worst):
        return _reject("stability", "non_finite_gradient", "gradient became NaN or inf", **values)
    if worst > space.rejection.stability:
        return _reject(
            "stability",
            "unstable",
            f"gradient/weight norm ratio {worst:.3g} above {space.rejection.stability:g}",
            **values,
        )
    return Verdict("stability", True, values=values)


class Funnel:
    """Screens candidates of one space in order, remembering what it has seen.

    ``seen`` holds the structural hashes of every candidate that passed stage 1 (pass the
    store's when resuming).  ``cache`` is the FEC; its entries are written by whoever
    trains survivors.  Until then a survivor is *in flight*: its functional twins are
    functional duplicates of it (with no fitness yet), so that one function is never
    trained twice at once; ``release`` ends that, e.g. when its training failed.  Verdicts
    of stages 4 and 5 are reused for functional duplicates of candidates already judged,
    since they depend on the function alone.  Not thread-safe: one funnel per driver.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        cache: FunctionalCache | None = None,
        seen: set[str] | None = None,
        stability: bool = True,
        judged_capacity: int = 100_000,
    ) -> None:
        self.space = space
        self.cache = cache if cache is not None else FunctionalCache()
        self.proxy_key = proxy_key(space)
        self.seen = seen if seen is not None else set()
        self.stability = stability
        # Functional hash -> verdicts 4 and 5; bounded, as a search may screen millions.
        self._judged: LRU[str, list[Verdict]] = LRU(judged_capacity)
        self._in_flight: dict[str, str] = {}  # functional hash -> survivor being trained

    def hold(self, functional_hash: str, candidate_id: str) -> None:
        """Mark a survivor as in flight (a resumed search's candidates still to train)."""
        self._in_flight[functional_hash] = candidate_id

    def release(self, functional_hash: str) -> None:
        """Forget that a survivor with this functional hash is in flight."""
        self._in_flight.pop(functional_hash, None)

    def screen(self, candidate: Any, *, candidate_id: str | None = None) -> Screening:
        """Run ``candidate`` (a LayerGraph, graph JSON or formula) through the stages until
        one rejects it or all have passed.  A survivor is in flight under ``candidate_id``
        (default: its structural hash) until its fitness is cached or it is released."""
        start = time.perf_counter()
        verdict, graph = check_static(candidate, self.space)
        result = Screening(graph, [verdict])
        mark = self._timer(result, "static", start)
        if not verdict.passed:
            return result

        result.structural_hash = graph.structural_hash()
        duplicate = result.structural_hash in self.seen
        self.seen.add(result.structural_hash)
        result.verdicts.append(
            _reject(
                "duplicate",
                "structural_duplicate",
                f"canonical form {result.structural_hash} seen before",
            )
            if duplicate
            else Verdict("duplicate", True)
        )
        mark = self._timer(result, "duplicate", mark)
        if duplicate:
            return result

        measured = probe(graph)
        result.functional_hash = measured.functional_hash
        fitness = result.fitness = self.cache.get(measured.functional_hash, self.proxy_key)
        twin = fitness.candidate if fitness else self._in_flight.get(measured.functional_hash)
        result.verdicts.append(
            _reject(
                "functional",
                "functional_duplicate",
                f"computes what candidate {twin} "
                f"does{'' if fitness else ' (in flight, no fitness yet)'}",
                candidate=twin,
            )
            if twin is not None
            else Verdict("functional", True)
        )
        mark = self._timer(result, "functional", mark)
        if twin is not None:
            return result

        judged = self._judged.get(measured.functional_hash)
        if judged is None:
            judged = [check_numeric(measured, self.space)]
            mark = self._timer(result, "numeric", mark)
            if judged[0].passed and self.stability:
                judged.append(check_stability(graph, self.space))
                self._timer(result, "stability", mark)
            self._judged.put(measured.functional_hash, judged)
        result.verdicts.extend(judged)
        if result.passed:
            self._in_flight[measured.functional_hash] = candidate_id or result.structural_hash
        return result

    @staticmethod
    def _timer(result: Screening, stage: str, since: float) -> float:
        now = time.perf_counter()
        result.seconds[stage] = result.seconds.get(stage, 0.0) + now - since
        return now


def screened_random_graphs(
    spaces: list[SearchSpace], count: int, seed: int = 0
) -> list[LayerGraph]:
    """``count`` random graphs that pass screening stages 1-4, drawn from ``spaces`` in
    turn: what reaches the compile stage (the compiler's tests and benchmarks draw these;
    a graph with non-finite outputs is rejected before)."""
    rng = np.random.default_rng(seed)
    funnels = [Funnel(space, stability=False) for space in spaces]
    graphs: list[LayerGraph] = []
    while len(graphs) < count:
        funnel = funnels[len(graphs) % len(funnels)]
        screening = funnel.screen(random_graph(funnel.space, rng))
        if screening.passed:
            graphs.append(screening.graph)
    return graphs
