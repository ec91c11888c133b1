"""``LayerGraph``: the genome of a layer, with its shape classes, liveness, validation, JSON
and networkx view; its formulas and canonical form come from the mixins beside it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from evonorm_search.errors import GraphError
from evonorm_search.graph.canonical import CanonicalForm
from evonorm_search.graph.formula import Formula
from evonorm_search.graph.nodes import (
    FORMAT,
    INITIAL_CLASSES,
    INITIAL_NODES,
    NUM_INITIAL,
    STATISTIC_CLASSES,
    X_CLASS,
    Node,
    ShapeClass,
    X,
    check_node,
    node_from_json,
)
from evonorm_search.ops import keeps_running

if TYPE_CHECKING:
    import networkx


@dataclass(frozen=True, repr=False)  # the repr is the formula (Formula.__repr__)
class LayerGraph(Formula, CanonicalForm):
    """An immutable, well-formed layer genome.  Construction checks structure only;
    :meth:`validate` checks that it is a usable layer (output varies like x, depends on x)."""

    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, tuple):
            object.__setattr__(self, "nodes", tuple(self.nodes))
        if not self.nodes:
            raise GraphError("a layer graph needs at least one node after x, 0, v0, v1")
        for index, node in enumerate(self.nodes, start=NUM_INITIAL):
            check_node(index, node)

    # ------------------------------------------------------------------ basic facts
    @property
    def output(self) -> int:
        """Index of the output node (the last one)."""
        return NUM_INITIAL + len(self.nodes) - 1

    def node(self, index: int) -> Node:
        """The node at graph index ``index`` (>= 4; 0..3 are the initial nodes)."""
        return self.nodes[index - NUM_INITIAL]

    def label(self, index: int) -> str:
        return INITIAL_NODES[index] if index < NUM_INITIAL else self.node(index).label

    def __len__(self) -> int:
        return len(self.nodes)

    @cached_property
    def shape_classes(self) -> tuple[ShapeClass, ...]:
        """The shape class of every node, initial nodes included, indexed like the graph."""
        classes = list(INITIAL_CLASSES)
        for node in self.nodes:
            if node.axis is not None:
                classes.append(STATISTIC_CLASSES[node.axis])
            else:
                cls = classes[node.inputs[0]]
                for i in node.inputs[1:]:
                    cls = cls.join(classes[i])
                classes.append(cls)
        return tuple(classes)

    @cached_property
    def live(self) -> frozenset[int]:
        """Indices the output depends on (itself included); the others are dead."""
        seen = {self.output}
        stack = [self.output]
        while stack:
            i = stack.pop()
            if i >= NUM_INITIAL:
                for j in self.node(i).inputs:
                    if j not in seen:
                        seen.add(j)
                        stack.append(j)
        return frozenset(seen)

    @property
    def depends_on_x(self) -> bool:
        return X in self.live

    @property
    def uses_batch_statistics(self) -> bool:
        """True when some live node is a batch statistic (the layer then needs running buffers
        and behaves differently in eval mode)."""
        return any(keeps_running(self.node(i).axis) for i in self.live if i >= NUM_INITIAL)

    def layer_problem(self) -> str | None:
        """Why this graph is not a usable layer (its output must vary like x and depend on
        x), or None when it is one."""
        out_class = self.shape_classes[self.output]
        if out_class != X_CLASS:
            return (
                f"output node {self.output} ({self.label(self.output)}) has shape class "
                f"{out_class}, but a layer's output must vary like x {X_CLASS}"
            )
        if not self.depends_on_x:
            return f"output node {self.output} ({self.label(self.output)}) does not depend on x"
        return None

    def validate(self) -> LayerGraph:
        """Raise :class:`GraphError` unless this graph is a usable layer; return it."""
        problem = self.layer_problem()
        if problem is not None:
            raise GraphError(problem)
        return self

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "nodes": [node.to_dict() for node in self.nodes]}

    def to_json(self, indent: int | None = None) -> str:
        """The graph as ``evonorm-graph/1`` JSON (deterministic key order)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> LayerGraph:
        """Read ``evonorm-graph/1`` JSON text or an already-decoded dict.

        Any malformed input, text that is not JSON included, raises :class:`GraphError`.
        """
        if isinstance(data, str | bytes | bytearray):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, nesting
                raise GraphError(f"graph JSON is not valid JSON: {e}") from None
        if not isinstance(data, Mapping):
            raise GraphError(f"graph JSON must be an object, got {type(data).__name__}")
        unknown = set(data) - {"format", "nodes"}
        if unknown:
            raise GraphError(
                f"graph JSON has unknown keys {sorted(map(str, unknown))} "
                "(expected 'format' and 'nodes')"
            )
        if data.get("format") != FORMAT:
            raise GraphError(f"graph JSON format must be {FORMAT!r}, got {data.get('format')!r}")
        raw_nodes = data.get("nodes")
        if not isinstance(raw_nodes, list):
            raise GraphError("graph JSON needs 'nodes', a list of node objects")
        return cls(tuple(node_from_json(NUM_INITIAL + k, raw) for k, raw in enumerate(raw_nodes)))

    # ------------------------------------------------------------------ networkx
    def to_networkx(self) -> networkx.MultiDiGraph:
        """A networkx view: one node per index (``label``, ``op``, ``axis``, ``shape_class``,
        ``live``), one edge per input with its argument position as ``arg`` (and key)."""
        import networkx as nx

        g = nx.MultiDiGraph(formula=self.formula(), output=self.output)
        for i, cls in enumerate(self.shape_classes):
            node = self.node(i) if i >= NUM_INITIAL else None
            g.add_node(
                i,
                label=self.label(i),
                op=node.op if node else INITIAL_NODES[i],
                axis=node.axis if node else None,
                shape_class=str(cls),
                live=i in self.live,
            )
            if node:
                for arg, j in enumerate(node.inputs):
                    g.add_edge(j, i, key=arg, arg=arg)
        return g


def as_graph(graph: LayerGraph | str | Mapping[str, Any]) -> LayerGraph:
    """A LayerGraph from a LayerGraph, graph JSON (text starting with ``{`` or a dict) or
    a formula."""
    if isinstance(graph, LayerGraph):
        return graph
    if isinstance(graph, Mapping) or (isinstance(graph, str) and graph.lstrip().startswith("{")):
        return LayerGraph.from_json(graph)
    if isinstance(graph, str):
        return LayerGraph.parse(graph)
    raise GraphError(f"expected a LayerGraph, formula or graph JSON, got {type(graph).__name__}")
