"""Search spaces: declarative TOML files naming what a search may build and how it judges it.

A space lists the ops, statistics and axes a graph may use and its size limit, the mutation
weights, the proxy architectures and data, the training budgets, the rejection thresholds,
the population settings and the compile target.  Every section but ``[graph]`` may be left
out (defaults below); unknown keys are refused so that a typo never passes silently.
The shipped spaces live in ``search_spaces/``; ``load_space`` takes a name or a path.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evonorm_search.catalog import (
    DATASETS,
    DEFAULT_TRANSFER_NETWORKS,
    PRESETS,
    PROXY_ARCHITECTURES,
    TRANSFER_NETWORK_TENSORS,
)
from evonorm_search.errors import GraphError, SpaceError
from evonorm_search.ops import AXES, ELEMENTWISE, STATISTICS
from evonorm_search.resources import resource_dir

if typing.TYPE_CHECKING:
    from evonorm_search.graph import LayerGraph

__all__ = ["SearchSpace", "list_spaces", "load_space"]

TENSOR_RANKS = {"image": 4, "sequence": 3}  # x is (N, C, H, W) or (N, C, L)
GPU_TARGET = re.compile(r"sm_[1-9][0-9]{1,2}a?")
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


@dataclass(frozen=True)
class GraphLimits:
    """What a graph in this space may contain.  ``max_nodes`` bounds the genome, dead nodes
    included (the paper's limit of 10 intermediate nodes)."""

    max_nodes: int = 10
    ops: tuple[str, ...] = tuple(ELEMENTWISE)
    statistics: tuple[str, ...] = tuple(STATISTICS)
    axes: tuple[str, ...] = AXES


@dataclass(frozen=True)
class MutationWeights:
    """Relative probabilities of the mutation operators (normalised by the mutator)."""

    change_op: float = 1.0  # replace a node's op by another of the same arity
    rewire: float = 1.0  # point one input at another earlier node
    resample: float = 1.0  # replace a node by a fresh random one
    insert: float = 0.5  # add a node (within max_nodes)
    delete: float = 0.5  # remove a node, rewiring its readers


@dataclass(frozen=True)
class ProxySettings:
    """The proxy task every candidate is trained on."""

    dataset: str = "cifar10"
    preset: str = "tiny"
    architectures: tuple[str, ...] = ("resnet", "mobilenet", "efficientnet")
    groups: int = 8  # groups for group statistics in the proxies (see DESIGN.md)
    validation: int = 2000  # images held out of the training data (fixed seed) to validate


@dataclass(frozen=True)
class TrainingBudget:
    """SGD with Nesterov momentum and weight decay; the learning rate follows a cosine from
    ``learning_rate`` to 0 over ``steps``.  Validation accuracy decides the quality check
    after ``quality_steps`` and is the fitness after ``steps``."""

    batch_size: int = 64
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    quality_steps: int = 100  # steps before the quality check
    steps: int = 300  # steps of full proxy training per architecture


@dataclass(frozen=True)
class RejectionThresholds:
    """``quality_accuracy`` is the validation accuracy a candidate needs after
    ``quality_steps`` on every architecture; 0.2 is the paper's CIFAR-10 figure, the fallback
    where no calibration was recorded.  ``stability`` bounds the gradient-norm ratio reached
    by adversarial ascent (the paper rejects around 1e8).  On the hash probe, at the initial
    parameters, an output must vary by at least ``min_output_spread`` (its range over the
    positions of a channel, relative to its largest absolute value) and stay within
    ``max_output_scale`` times the input's RMS (floored at 1)."""

    quality_accuracy: float = 0.2
    stability: float = 1e8
    min_output_spread: float = 1e-4
    max_output_scale: float = 1e4


@dataclass(frozen=True)
class SignalThresholds:
    """The learning-signal stage: the first ``steps`` training steps on the first proxy
    architecture (the start of its quality check, not extra training) reject a layer whose
    loss is not falling (the mean of the first ``window`` losses minus the mean of the last
    ``window`` is below ``min_loss_drop``), whose gradient at the input (RMS per element, at
    the first and last step) leaves [``min_input_gradient``, ``max_input_gradient``], or
    whose outputs collapse (the logits' standard deviation over the batch relative to their
    RMS below ``min_output_spread``).  The defaults reject nothing: thresholds come from a
    calibration on the space's own dataset (``benchmarks/learning_signal.py``), which a search on
    another dataset does not apply."""

    steps: int = 20
    window: int = 5
    min_loss_drop: float = -1e9
    min_input_gradient: float = 0.0
    max_input_gradient: float = 1e30
    min_output_spread: float = 0.0

    @property
    def rejects_nothing(self) -> bool:
        return self == dataclasses.replace(SignalThresholds(), steps=self.steps, window=self.window)


@dataclass(frozen=True)
class PopulationSettings:
    """Regularized evolution's ``population`` (the most recent trained candidates) and
    ``tournament`` size.  Until ``2 x tournament`` candidates are trained (or
    ``start_after``, where set) the search fills its initial population: the zoo's layers
    with ``--initial baselines``, then a share ``initial_mutants`` of mutants of a uniformly
    drawn trained member (where there is one) and random graphs for the rest."""

    population: int = 32
    tournament: int = 8
    initial_mutants: float = 0.5
    start_after: int = 0  # 0: twice the tournament


@dataclass(frozen=True)
class TransferSettings:
    """The transfer stage (``evonorm-search transfer``): each layer trained from scratch on
    ``networks`` (bigger than the proxies, at full resolution; empty: ``resnet20`` for an
    image space, ``vit_d4`` for a sequence space) for ``steps`` at ``batch_size``, SGD with
    Nesterov ``momentum`` and ``weight_decay`` on a cosine from ``learning_rate``, on
    ``seeds`` seeds (1..S).  With ``learning_rates`` (e.g. three rates) each layer first
    trains once per rate at seed 0 and keeps the best on transfer-validation.  The
    transfer-validation accuracy is recorded every ``eval_every`` steps (the learning
    curve), and a run's state is checkpointed to the database every ``checkpoint_minutes``."""

    networks: tuple[str, ...] = ()
    steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 0.1
    learning_rates: tuple[float, ...] = ()
    momentum: float = 0.9
    weight_decay: float = 5e-4
    eval_every: int = 100
    seeds: int = 5
    checkpoint_minutes: float = 3.0


@dataclass(frozen=True)
class CompileTarget:
    """The GPU target and the reference shape and dtype kernels are compiled and costed at."""

    target: str = "sm_90a"
    reference_shape: tuple[int, ...] = (128, 64, 56, 56)
    dtype: str = "bfloat16"


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    tensor: str  # "image" (N, C, H, W) or "sequence" (N, C, L)
    graph: GraphLimits
    mutation: MutationWeights
    proxy: ProxySettings
    training: TrainingBudget
    rejection: RejectionThresholds
    search: PopulationSettings
    compile: CompileTarget
    signal: SignalThresholds = SignalThresholds()
    transfer: TransferSettings = TransferSettings()
    path: Path | None = None

    def violations(self, graph: LayerGraph) -> list[str]:
        """Every way ``graph`` (dead nodes included) breaks this space's limits."""
        problems = []
        if len(graph.nodes) > self.graph.max_nodes:
            problems.append(
                f"{len(graph.nodes)} nodes, above this space's limit of {self.graph.max_nodes}"
            )
        for index, node in enumerate(graph.nodes, start=4):
            if node.axis is None:
                if node.op not in self.graph.ops:
                    problems.append(f"node {index}: op {node.op!r} is not in this space")
            elif node.op not in self.graph.statistics:
                problems.append(f"node {index}: statistic {node.op!r} is not in this space")
            elif node.axis not in self.graph.axes:
                problems.append(f"node {index}: axis {node.axis!r} is not in this space")
        return problems

    def check(self, graph: LayerGraph) -> LayerGraph:
        """Raise :class:`GraphError` naming every violation of this space; return ``graph``."""
        problems = self.violations(graph)
        if problems:
            raise GraphError(f"graph is outside search space {self.name!r}: " + "; ".join(problems))
        return graph


_SECTIONS = {
    "graph": GraphLimits,
    "mutation": MutationWeights,
    "proxy": ProxySettings,
    "training": TrainingBudget,
    "rejection": RejectionThresholds,
    "search": PopulationSettings,
    "compile": CompileTarget,
    "signal": SignalThresholds,
    "transfer": TransferSettings,
}


def list_spaces() -> list[str]:
    """Names of the spaces shipped with the package."""
    return sorted(p.stem for p in resource_dir("search_spaces").glob("*.toml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a shipped space by name (``"evonorm_b"``) or any space file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            problem = "is not a file" if path.exists() else "does not exist"
            hint = (
                f" (for the shipped space, give its name: {path.stem})"
                if (path.stem in list_spaces() and "/" not in text)
                else ""
            )
            raise SpaceError(f"search space file {text} {problem}{hint}")
    else:
        path = resource_dir("search_spaces") / f"{text}.toml"
        if not path.is_file():
            raise SpaceError(
                f"unknown search space {text!r} (available: {', '.join(list_spaces())})"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpaceError(f"{path.name}: not valid TOML: {e}") from None
    except OSError as e:
        raise SpaceError(f"{path}: cannot read: {e.strerror}") from None
    return _space_from_dict(data, path)


def _space_from_dict(data: dict[str, Any], path: Path) -> SearchSpace:
    where = path.name
    top_level = {"description", "tensor", *_SECTIONS}
    unknown = sorted(set(data) - top_level)
    if unknown:
        raise SpaceError(
            f"{where}: unknown key {unknown[0]!r} (expected: {', '.join(sorted(top_level))})"
        )
    if "graph" not in data:
        raise SpaceError(f"{where}: missing the [graph] section")
    description = _coerce(data.get("description", ""), str, f"{where}: description")
    tensor = _coerce(data.get("tensor", "image"), str, f"{where}: tensor")
    sections = {
        key: _section(cls, data.get(key, {}), f"{where} [{key}]") for key, cls in _SECTIONS.items()
    }
    dtype = sections["compile"].dtype
    if dtype not in DTYPES:
        raise SpaceError(
            f"{where}: [compile] dtype must be one of {', '.join(DTYPES)}, got {dtype!r}"
        )
    sections["compile"] = dataclasses.replace(sections["compile"], dtype=DTYPES[dtype])
    if not sections["transfer"].networks and tensor in DEFAULT_TRANSFER_NETWORKS:
        networks = DEFAULT_TRANSFER_NETWORKS[tensor]
        sections["transfer"] = dataclasses.replace(sections["transfer"], networks=networks)
    space = SearchSpace(
        name=path.stem, description=description, tensor=tensor, path=path, **sections
    )
    _check_semantics(space, where)
    return space


def _section(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise SpaceError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in table:
        if key not in names:
            raise SpaceError(f"{where}: unknown key {key!r} (expected: {', '.join(names)})")
    return cls(
        **{key: _coerce(value, hints[key], f"{where} {key}") for key, value in table.items()}
    )


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a field's type; TOML arrays become tuples, ints may be floats."""
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise SpaceError(f"{where}: expected a list, got {value!r}")
        if item is str and len(set(map(repr, value))) != len(value):  # names, not sizes
            raise SpaceError(f"{where}: {value!r} lists an entry twice")
        return tuple(_coerce(v, item, where) for v in value)
    ok = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: (
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ),
        str: lambda v: isinstance(v, str),
    }[hint](value)
    if not ok:
        raise SpaceError(f"{where}: expected {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value


def _check_semantics(space: SearchSpace, where: str) -> None:
    def require(condition: bool, message: str) -> None:
        if not condition:
            raise SpaceError(f"{where}: {message}")

    def subset(values: tuple[str, ...], allowed: Any, what: str) -> None:
        for v in values:
            require(v in allowed, f"unknown {what} {v!r} (known: {', '.join(allowed)})")

    g = space.graph
    require(
        space.tensor in TENSOR_RANKS,
        f"tensor must be one of {', '.join(TENSOR_RANKS)}, got {space.tensor!r}",
    )
    require(g.max_nodes >= 1, f"[graph] max_nodes must be >= 1, got {g.max_nodes}")
    subset(g.ops, ELEMENTWISE, "op")
    subset(g.statistics, STATISTICS, "statistic")
    subset(g.axes, AXES, "axis")
    require(bool(g.ops), "[graph] ops must name at least one op")
    require(
        bool(g.statistics) == bool(g.axes),
        "[graph] statistics and axes must both be empty or both be non-empty",
    )
    weights = dataclasses.asdict(space.mutation).values()
    require(
        all(w >= 0 for w in weights) and sum(weights) > 0,
        "[mutation] weights must be >= 0 and not all 0",
    )
    p = space.proxy
    require(p.dataset in DATASETS, f"[proxy] dataset must be one of {', '.join(DATASETS)}")
    require(p.preset in PRESETS, f"[proxy] preset must be one of {', '.join(PRESETS)}")
    subset(p.architectures, PROXY_ARCHITECTURES, "proxy architecture")
    require(bool(p.architectures), "[proxy] architectures must name at least one")
    for arch in p.architectures:
        require(
            PROXY_ARCHITECTURES[arch] == space.tensor,
            f"[proxy] {arch} takes {PROXY_ARCHITECTURES[arch]} tensors, "
            f"not this space's {space.tensor} tensors",
        )
    require(p.groups >= 1, "[proxy] groups must be >= 1")
    require(p.validation >= 1, "[proxy] validation must be >= 1")
    t = space.training
    require(
        min(t.batch_size, t.quality_steps, t.steps) >= 1,
        "[training] batch_size, quality_steps and steps must be >= 1",
    )
    require(t.quality_steps <= t.steps, "[training] quality_steps must not exceed steps")
    require(t.learning_rate > 0, "[training] learning_rate must be > 0")
    require(0 <= t.momentum < 1, "[training] momentum must be in [0, 1)")
    require(t.weight_decay >= 0, "[training] weight_decay must be >= 0")
    r = space.rejection
    require(0 <= r.quality_accuracy <= 1, "[rejection] quality_accuracy must be in [0, 1]")
    require(r.stability > 0, "[rejection] stability must be > 0")
    require(r.min_output_spread >= 0, "[rejection] min_output_spread must be >= 0")
    require(r.max_output_scale > 0, "[rejection] max_output_scale must be > 0")
    s = space.search
    require(2 <= s.tournament <= s.population, "[search] needs 2 <= tournament <= population")
    require(0 <= s.initial_mutants <= 1, "[search] initial_mutants must be in [0, 1]")
    require(s.start_after >= 0, "[search] start_after must be >= 0 (0: twice the tournament)")
    sg = space.signal
    require(sg.steps >= 2 and sg.window >= 1, "[signal] needs steps >= 2 and window >= 1")
    require(
        sg.min_input_gradient <= sg.max_input_gradient,
        "[signal] min_input_gradient must not exceed max_input_gradient",
    )
    tr = space.transfer
    subset(tr.networks, TRANSFER_NETWORK_TENSORS, "transfer network")
    for network in tr.networks:
        require(
            TRANSFER_NETWORK_TENSORS[network] == space.tensor,
            f"[transfer] {network} takes {TRANSFER_NETWORK_TENSORS[network]} tensors, "
            f"not this space's {space.tensor} tensors",
        )
    require(
        min(tr.steps, tr.batch_size, tr.eval_every, tr.seeds) >= 1,
        "[transfer] steps, batch_size, eval_every and seeds must be >= 1",
    )
    require(
        tr.learning_rate > 0 and all(lr > 0 for lr in tr.learning_rates),
        "[transfer] learning rates must be > 0",
    )
    require(0 <= tr.momentum < 1, "[transfer] momentum must be in [0, 1)")
    require(tr.weight_decay >= 0, "[transfer] weight_decay must be >= 0")
    require(tr.checkpoint_minutes > 0, "[transfer] checkpoint_minutes must be > 0")
    c = space.compile
    require(
        GPU_TARGET.fullmatch(c.target) is not None,
        f"[compile] target must look like sm_90a or sm_80, got {c.target!r}",
    )
    rank = TENSOR_RANKS.get(space.tensor)
    require(
        len(c.reference_shape) == rank and all(d >= 1 for d in c.reference_shape),
        f"[compile] reference_shape must be {rank} positive sizes for {space.tensor} tensors",
    )
