"""Functional hashing and the functional equivalence cache (FEC).

Two graphs that compute the same function should be trained once.  As in AutoML-Zero and
"Unified Functional Hashing in AutoML" (2023), a graph is run on a fixed probe, its outputs
are rounded and hashed, and equal hashes share one fitness.

The probe (all float64, seeded, evaluated side by side as independent "lanes"):

- ``BATCHES`` = 6 input batches x of shape (N, C, S) = (4, 6, 3), each channel with its own
  scale and offset, so that statistics over different axes differ (C = 6 in 3 groups keeps
  instance, group and layer statistics distinct; spatial axes are flattened, as every
  statistic reduces over all of them alike).  Four batches sit at magnitudes x1, x0.1, x5
  and x0.001, so that scale-dependent graphs (``max(std, 1)``) differ from scale-free ones
  and values around sqrt(eps) are seen; one mirrors the first (-x), so that every mean is
  seen with both signs; in one, each sample is all positive or all negative.
- ``DRAWS`` = 5 draws of (v0, v1): the initial values (0, 1), then random values of both
  signs at magnitudes x1, x0.1, x5 and x0.01, so that ``x`` and ``x * v1`` differ, as do
  graphs that differ only for small or large parameters.
- Training mode on the batches in turn (batch statistics; running estimates updated with
  BatchNorm's momentum, computed in closed form), then eval mode on the same batches with
  the running estimates they left, so that graphs equal in training but not in inference
  differ.

Outputs are flushed to 0 below 1e-12, rounded to ``SIGNIFICANT_BITS`` significant bits and
hashed with the protocol name, so that changing the probe changes every hash.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

from evonorm_search import eager
from evonorm_search.graph import NUM_INITIAL, LayerGraph, Node
from evonorm_search.ops import ELEMENTWISE, STATISTICS, StatisticOp, keeps_running

if TYPE_CHECKING:
    from evonorm_search.space import SearchSpace

__all__ = [
    "LRU",
    "CachedFitness",
    "FECBackend",
    "FunctionalCache",
    "ProbeResult",
    "functional_hash",
    "probe",
    "probe_outputs",
    "proxy_key",
]

K, V = TypeVar("K"), TypeVar("V")

PROTOCOL = "evonorm-fhash/1"  # part of every hash: bump it whenever the probe changes
PROXY_PROTOCOL = "evonorm-proxy/2"  # part of every proxy key: bump when training changes
# /2: the transfer slices are carved out of the training images (proxy.data)
N, C, GROUPS, S = 4, 6, 3, 3
# Magnitudes of the first probe batches: x0.001 straddles sqrt(eps) = 3e-3, the IR's only
# constant besides 0 and eps, so that max(std_instance(0), abs(x)) differs from abs(x).
# Then come -(the first batch), and |the first| with samples alternately all positive and
# all negative.
MAGNITUDES = (1.0, 0.1, 5.0, 0.001)
BATCHES = len(MAGNITUDES) + 2
DRAW_SCALES = (1.0, 0.1, 5.0, 0.01)  # of the random (v0, v1) draws, after the initial one
DRAWS = 1 + len(DRAW_SCALES)
EPS, MOMENTUM = 1e-5, 0.1
SIGNIFICANT_BITS = 24
FLUSH = 1e-12


@dataclass(frozen=True)
class _Probe:
    x: Tensor  # (DRAWS * BATCHES, N, C, S); lane = draw * BATCHES + batch
    v0: Tensor  # (DRAWS * BATCHES, 1, C, 1)
    v1: Tensor
    zero: Tensor  # the 0 node
    weights: Tensor  # (BATCHES,): weight of each batch in the final running estimate
    rms_in: np.ndarray  # (2 * BATCHES,): max(1, input RMS) per batch, twice (train, eval)


@cache
def _make_probe(seed: int) -> _Probe:
    g = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def column(values: tuple[float, ...]) -> Tensor:
        return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1, 1)

    k = len(MAGNITUDES)
    scale = draw(k, 1, C, 1).abs() * 2 + 0.5  # per batch and channel
    offset = draw(k, 1, C, 1) * 2
    batches = (draw(k, N, C, S) * scale + offset) * column(MAGNITUDES)
    signs = torch.tensor([1.0, -1.0] * (N // 2), dtype=torch.float64).view(1, N, 1, 1)
    batches = torch.cat([batches, -batches[:1], batches[:1].abs() * signs])
    # The initial (v0, v1) = (0, 1), then random draws at several magnitudes.
    scales = torch.tensor(DRAW_SCALES, dtype=torch.float64).view(-1, 1)
    v0 = torch.cat([torch.zeros(1, C, dtype=torch.float64), draw(DRAWS - 1, C) * scales])
    v1 = torch.cat([torch.ones(1, C, dtype=torch.float64), draw(DRAWS - 1, C) * scales])

    def per_lane(v: Tensor) -> Tensor:
        return v.repeat_interleave(BATCHES, 0).view(DRAWS * BATCHES, 1, C, 1)

    # Batch k of K enters the final running estimate with weight m (1 - m)^(K - 1 - k).
    weights = torch.tensor(
        [MOMENTUM * (1 - MOMENTUM) ** (BATCHES - 1 - k) for k in range(BATCHES)],
        dtype=torch.float64,
    )
    x = batches.repeat(DRAWS, 1, 1, 1)
    # Floored at 1: normalising the tiny batches to outputs of about 1 is no explosion.
    rms_in = batches.square().mean(dim=(1, 2, 3)).sqrt().clamp(min=1.0).repeat(2).numpy()
    return _Probe(x, per_lane(v0), per_lane(v1), x.new_zeros(()), weights, rms_in)


@dataclass(frozen=True)
class ProbeResult:
    """The functional hash and the numeric figures the screening funnel judges.

    The figures are measured at the layer's initial parameters (v0 = 0, v1 = 1), where
    training starts, over the probe batches in training and eval mode: ``finite`` (no NaN
    or inf), ``spread`` (the largest range, max - min, over the batch and spatial positions
    of one channel, relative to the largest absolute output: about 0 means an output that
    ignores its input) and ``scale`` (the largest ratio of the output's root-mean-square to
    the input's, the latter floored at 1).
    Both are NaN for a non-finite output.
    """

    functional_hash: str
    finite: bool
    spread: float
    scale: float


class LRU(Generic[K, V]):
    """A mapping that forgets its least recently used entries beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


# Node values by (probe seed, expression id).  Mutation children share most subexpressions
# with their parents and the rest of a population, so most nodes of a new candidate were
# evaluated before.  An entry is a node's value in training and in eval mode (one tensor
# where no batch statistic is upstream), at most 2 x 17 KiB: 2048 stay under 70 MiB.
_MEMO: LRU[tuple[int, bytes], tuple[Tensor, Tensor]] = LRU(capacity=2048)


def _evaluate(graph: LayerGraph, p: _Probe, seed: int) -> tuple[Tensor, Tensor | None]:
    """The output on every lane in training mode, and in eval mode with the running
    estimates that training on the batches in turn left (None where no batch statistic
    makes the two differ)."""
    ids, ranks = graph.expression_ids, graph.input_ranks
    train: dict[int, Tensor] = {0: p.x, 1: p.zero, 2: p.v0, 3: p.v1}
    evaluation = dict(train)
    for index in sorted(graph.live):
        if index < NUM_INITIAL:
            continue
        key = (seed, ids[index])
        entry = _MEMO.get(key)
        if entry is None:
            # Commutative inputs in canonical order, so that the value is the key's alone
            # (NaN payloads, say), and computed as GraphNormAct computes the canonical graph.
            node = graph.node(index)
            order = node.inputs
            if len(order) == 2 and ELEMENTWISE[node.op].commutative:
                order = sorted(order, key=ranks.__getitem__)
            entry = _evaluate_node(node, order, train, evaluation, p)
            _MEMO.put(key, entry)
        train[index], evaluation[index] = entry
    out_train, out_eval = _full(train[graph.output], p), _full(evaluation[graph.output], p)
    return out_train, None if evaluation[graph.output] is train[graph.output] else out_eval


def _full(t: Tensor, p: _Probe) -> Tensor:
    return t if t.shape == p.x.shape else t.expand(p.x.shape)


def _evaluate_node(
    node: Node,
    order: tuple[int, ...] | list[int],
    train: dict[int, Tensor],
    evaluation: dict[int, Tensor],
    p: _Probe,
) -> tuple[Tensor, Tensor]:
    inputs = [train[j] for j in order]
    same = all(evaluation[j] is train[j] for j in order)  # no batch statistic upstream
    if node.axis is None:
        op = ELEMENTWISE[node.op].eager
        value = op(*inputs)
        return value, value if same else op(*[evaluation[j] for j in order])
    stat = STATISTICS[node.op]

    def moment(e: Tensor) -> Tensor:
        return eager.reduce_moment(_full(e, p), node.axis, GROUPS, stat.moment, 1)

    m = moment(inputs[0])
    value = stat.finish(m, EPS)
    if keeps_running(node.axis):
        return value, stat.finish(_running_estimate(stat, m, p), EPS)
    return value, value if same else stat.finish(moment(evaluation[order[0]]), EPS)


def _running_estimate(stat: StatisticOp, moment: Tensor, p: _Probe) -> Tensor:
    """A batch statistic's running estimate after training on the batches in turn, per
    lane, from its training-mode moments (lanes, 1, C, 1)."""
    n = N * S
    estimate = eager.running_estimate(moment, n, stat.running_unbiased)
    # (BATCHES,) @ (DRAWS, BATCHES, C) -> (DRAWS, C); then one estimate per lane.
    final = p.weights @ estimate.view(DRAWS, BATCHES, C)
    final = final + (1 - MOMENTUM) ** BATCHES * stat.running_init
    lanes = final.view(DRAWS, 1, 1, C, 1).expand(DRAWS, BATCHES, 1, C, 1)
    return lanes.reshape(DRAWS * BATCHES, 1, C, 1)


def _quantized(a: np.ndarray) -> bytes:
    """Outputs as bytes that are equal for values equal to 24 significant bits: tiny values
    and -0 flushed to 0, NaNs made one NaN, infinities kept."""
    magnitude = np.abs(a)
    if magnitude.max() < 1e38:  # all finite and within float32's range (NaN compares False)
        # The cast rounds to 24 significant bits (to nearest even).
        return np.where(magnitude < FLUSH, 0.0, a).astype(np.float32).tobytes()
    a = np.where(magnitude < FLUSH, 0.0, np.where(np.isnan(a), np.nan, a))
    drop = 53 - SIGNIFICANT_BITS  # float64 has 53 significant bits, the first implicit
    rounded = (a.view(np.uint64) + np.uint64(1 << (drop - 1))) & ~np.uint64((1 << drop) - 1)
    return np.where(np.isfinite(a), rounded, a.view(np.uint64)).tobytes()


def _outputs(graph: LayerGraph, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The outputs in training and in eval mode (the same array where they cannot differ);
    possibly views of memoised values: read them, never write."""
    train_t, eval_t = _evaluate(graph, _make_probe(seed), seed)
    train = np.ascontiguousarray(train_t.numpy())
    return train, train if eval_t is None else np.ascontiguousarray(eval_t.numpy())


def probe_outputs(graph: LayerGraph, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The graph's output on every lane of the probe of ``seed``, in training mode and in
    eval mode, as arrays of shape (lanes, N, C, S) the caller owns."""
    return tuple(np.array(a) for a in _outputs(graph, seed))  # copies, never the memo's


def probe(graph: LayerGraph, *, seed: int = 0) -> ProbeResult:
    """Run ``graph`` (its live nodes) on the probe of ``seed``: its functional hash and the
    numeric figures of its output."""
    train, evaluation = _outputs(graph, seed)
    quantized_train = _quantized(train)
    digest = hashlib.sha256(PROTOCOL.encode())
    digest.update(quantized_train)
    digest.update(quantized_train if evaluation is train else _quantized(evaluation))
    # Numeric figures at the initial parameters: the first BATCHES lanes, in both modes.
    init = (
        train[:BATCHES]
        if evaluation is train
        else np.concatenate([train[:BATCHES], evaluation[:BATCHES]])
    )
    peak = float(np.abs(init).max())  # NaN when any value is
    finite = peak < math.inf
    spread = scale = math.nan
    if finite:
        per_channel = init.transpose(0, 2, 1, 3).reshape(len(init), C, N * S)
        spread = float((per_channel.max(-1) - per_channel.min(-1)).max()) / peak if peak else 0.0
        with np.errstate(over="ignore"):  # a huge output may square to inf: still "exploding"
            rms = np.sqrt(np.square(init).reshape(len(init), -1).mean(-1))
        scale = float((rms / _make_probe(seed).rms_in[: len(init)]).max())
    return ProbeResult(digest.hexdigest()[:32], finite, spread, scale)


def functional_hash(graph: LayerGraph, *, seed: int = 0) -> str:
    """A hash equal for graphs that compute the same function on the probe (to
    ``SIGNIFICANT_BITS`` bits), in training and in eval mode."""
    return probe(graph, seed=seed).functional_hash


def proxy_key(space: SearchSpace) -> str:
    """What a cached fitness depends on besides the function: the dataset, preset,
    architectures, groups, training hyper-parameters and protocol version.  Not the
    search's name or seed, so that the cache works across searches."""
    config = {
        "protocol": PROXY_PROTOCOL,
        "dataset": space.proxy.dataset,
        "preset": space.proxy.preset,
        "architectures": list(space.proxy.architectures),
        "groups": space.proxy.groups,
        "validation": space.proxy.validation,
        **dataclasses.asdict(space.training),
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedFitness:
    """The fitness a trained candidate earned, reusable by its functional duplicates."""

    candidate: str  # the trained candidate this fitness belongs to
    scores: dict[str, float] = field(default_factory=dict)  # per proxy architecture


class FECBackend(abc.ABC):
    """Persistent storage behind :class:`FunctionalCache` (the results store provides one,
    so that the cache outlives a process and is shared by the searches of a database).

    Entries are keyed by (functional hash, proxy key) and never change once written.
    """

    @abc.abstractmethod
    def get(self, functional_hash: str, proxy_key: str) -> CachedFitness | None:
        """The stored fitness, or None."""

    @abc.abstractmethod
    def put(self, functional_hash: str, proxy_key: str, fitness: CachedFitness) -> None:
        """Store a fitness (a second put for the same key keeps the first)."""


class FunctionalCache:
    """The functional equivalence cache: an in-memory LRU in front of an optional
    persistent backend.  ``hits`` and ``misses`` count lookups."""

    def __init__(self, capacity: int = 100_000, backend: FECBackend | None = None) -> None:
        self.backend = backend
        self.hits = self.misses = 0
        self._entries: LRU[tuple[str, str], CachedFitness] = LRU(capacity)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, functional_hash: str, proxy_key: str) -> CachedFitness | None:
        key = (functional_hash, proxy_key)
        fitness = self._entries.get(key)
        if fitness is None and self.backend is not None:
            fitness = self.backend.get(functional_hash, proxy_key)
            if fitness is not None:
                self._entries.put(key, fitness)
        if fitness is None:
            self.misses += 1
        else:
            self.hits += 1
        return fitness

    def put(self, functional_hash: str, proxy_key: str, fitness: CachedFitness) -> None:
        """Remember ``fitness`` unless the key has one: entries never change, the first
        fitness stays (in memory while remembered, in the backend for good)."""
        key = (functional_hash, proxy_key)
        if key in self._entries:
            return
        if self.backend is not None:
            stored = self.backend.get(functional_hash, proxy_key)
            if stored is not None:  # evicted from memory, kept by the backend
                self._entries.put(key, stored)
                return
            self.backend.put(functional_hash, proxy_key, fitness)
        self._entries.put(key, fitness)
