"""The genome's parts: the initial nodes, shape classes and ``Node``, with the checks that
every node of a graph passes (``LayerGraph`` is in :mod:`evonorm_search.graph.genome`)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from evonorm_search.errors import GraphError
from evonorm_search.ops import AXES, AXIS_KINDS, OPS, STATISTICS

FORMAT = "evonorm-graph/1"
INITIAL_NODES: tuple[str, ...] = ("x", "0", "v0", "v1")
NUM_INITIAL = len(INITIAL_NODES)
X, ZERO, V0, V1 = range(NUM_INITIAL)

# A formula that expands a DAG into a tree can grow exponentially with sharing; past this
# many characters printing refuses rather than exhausting memory.
MAX_FORMULA_CHARS = 1_000_000

Channel = Literal["none", "group", "full"]
_CHANNEL_ORDER: dict[str, int] = {"none": 0, "group": 1, "full": 2}


@dataclass(frozen=True)
class ShapeClass:
    """Which axes of x's (N, C, *spatial) layout a node's value varies along."""

    batch: bool
    channel: Channel
    spatial: bool

    def join(self, other: ShapeClass) -> ShapeClass:
        """The class of an element-wise op of two inputs: it varies where either does."""
        channel = max(self.channel, other.channel, key=_CHANNEL_ORDER.__getitem__)
        return ShapeClass(self.batch or other.batch, channel, self.spatial or other.spatial)

    def __str__(self) -> str:
        channel = {"none": "-", "group": "G", "full": "C"}[self.channel]
        return f"({'N' if self.batch else '-'}, {channel}, {'S' if self.spatial else '-'})"


X_CLASS = ShapeClass(True, "full", True)
INITIAL_CLASSES = (
    X_CLASS,
    ShapeClass(False, "none", False),
    *[ShapeClass(False, "full", False)] * 2,
)
STATISTIC_CLASSES: Mapping[str, ShapeClass] = {
    name: ShapeClass(*kind.shape) for name, kind in AXIS_KINDS.items()
}


@dataclass(frozen=True)
class Node:
    """One op applied to earlier nodes; ``axis`` is set for statistics only."""

    op: str
    inputs: tuple[int, ...]
    axis: str | None = None

    def __post_init__(self) -> None:
        if type(self.inputs) is tuple and all(type(j) is int for j in self.inputs):
            return  # the common case, kept fast: graphs build many nodes
        # Accept any integer type (numpy's included) but store plain ints; bools stay as
        # they are so that validation refuses them.
        inputs = tuple(
            int(j) if isinstance(j, numbers.Integral) and not isinstance(j, bool) else j
            for j in self.inputs
        )
        object.__setattr__(self, "inputs", inputs)

    @property
    def label(self) -> str:
        """The op as formulas write it: ``add``, ``std_group``."""
        return f"{self.op}_{self.axis}" if self.axis else self.op

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        if self.axis is not None:
            out["axis"] = self.axis
        out["inputs"] = list(self.inputs)
        return out


def check_node(index: int, node: Node) -> None:
    op = OPS.get(node.op)
    if op is None:
        raise GraphError(f"node {index}: unknown op {node.op!r} (known: {', '.join(OPS)})")
    if len(node.inputs) != op.arity:
        raise GraphError(
            f"node {index} ({node.op}): expects {op.arity} input"
            f"{'s' if op.arity > 1 else ''}, got {len(node.inputs)}"
        )
    for j in node.inputs:
        if type(j) is not int or not 0 <= j < index:
            raise GraphError(
                f"node {index} ({node.op}): input {j!r} must be an index of an "
                f"earlier node, 0..{index - 1}"
            )
    if node.op in STATISTICS:
        if node.axis not in AXES:
            raise GraphError(
                f"node {index} ({node.op}): statistic needs an axis, one of "
                f"{', '.join(AXES)}; got {node.axis!r}"
            )
    elif node.axis is not None:
        raise GraphError(
            f"node {index} ({node.op}): element-wise op takes no axis (got {node.axis!r})"
        )


def node_from_json(index: int, raw: Any) -> Node:
    if not isinstance(raw, Mapping):
        raise GraphError(f"node {index}: must be an object, got {type(raw).__name__}")
    unknown = set(raw) - {"op", "inputs", "axis"}
    if unknown:
        raise GraphError(
            f"node {index}: unknown keys {sorted(map(str, unknown))} "
            "(expected 'op', 'inputs' and, for statistics, 'axis')"
        )
    op, inputs, axis = raw.get("op"), raw.get("inputs"), raw.get("axis")
    if not isinstance(op, str):
        raise GraphError(f"node {index}: 'op' must be a string, got {op!r}")
    if not isinstance(inputs, list):
        raise GraphError(f"node {index} ({op}): 'inputs' must be a list of node indices")
    if axis is not None and not isinstance(axis, str):
        raise GraphError(f"node {index} ({op}): 'axis' must be a string, got {axis!r}")
    node = Node(op, tuple(inputs), axis)
    check_node(index, node)
    return node
