"""LayerGraph: the genome of a normalization-activation layer.

A layer is a DAG over four initial nodes -- ``x`` (the input), ``0``, and the per-channel
trainable ``v0`` (initialised to 0) and ``v1`` (initialised to 1) -- followed by nodes that
each apply one op of :mod:`evonorm_search.ops` to earlier nodes.  The last node is the
output; the layer then applies the usual per-channel affine ``y * weight + bias``.

The genome keeps dead nodes (stepping stones for mutation).  Hashing, training, compiling
and export use :meth:`LayerGraph.canonical`: dead nodes pruned, common subexpressions
merged, commutative inputs ordered and nodes renumbered in a deterministic topological
order, so that two graphs computing the same expression tree have the same canonical JSON
and :meth:`LayerGraph.structural_hash`.

Two text forms: JSON (format ``evonorm-graph/1``) and formulas such as
``x * sigmoid(v1 * x) / std_group(x)``, parsed with :mod:`ast` against a whitelist and
never evaluated.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from evonorm_search.errors import GraphError
from evonorm_search.ops import (
    AXES,
    AXIS_KINDS,
    ELEMENTWISE,
    OPS,
    PREC_ATOM,
    STATISTICS,
    keeps_running,
)

if TYPE_CHECKING:
    import networkx

__all__ = ["FORMAT", "INITIAL_NODES", "LayerGraph", "Node", "ShapeClass", "as_graph"]

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
_INITIAL_CLASSES = (
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


@dataclass(frozen=True)
class LayerGraph:
    """An immutable, well-formed layer genome.  Construction checks structure only;
    :meth:`validate` checks that it is a usable layer (output varies like x, depends on x)."""

    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, tuple):
            object.__setattr__(self, "nodes", tuple(self.nodes))
        if not self.nodes:
            raise GraphError("a layer graph needs at least one node after x, 0, v0, v1")
        for index, node in enumerate(self.nodes, start=NUM_INITIAL):
            _check_node(index, node)

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
        classes = list(_INITIAL_CLASSES)
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
        return cls(tuple(_node_from_json(NUM_INITIAL + k, raw) for k, raw in enumerate(raw_nodes)))

    # ------------------------------------------------------------------ formulas
    @classmethod
    def parse(cls, formula: str) -> LayerGraph:
        """Parse a formula such as ``x * sigmoid(v1 * x) / std_group(x)``.

        Infix ``+ - * /``, unary ``-``, ``max(a, b)``, element-wise ops as calls, statistics
        as ``<mean|rms|std>_<axis>(e)``, the names ``x``, ``v0``, ``v1`` and the constant
        ``0``.  ``a - b`` is ``add(a, neg(b))``.  A repeated subexpression becomes one node.
        """
        if not isinstance(formula, str):
            raise GraphError(f"a formula must be a string, got {type(formula).__name__}")
        if not formula.strip():
            raise GraphError("formula is empty")
        too_deep = GraphError("formula nests too deeply to parse")
        try:
            tree = ast.parse(formula.strip(), mode="eval")
        except SyntaxError as e:
            where = f" at column {e.offset}" if e.offset else ""
            raise GraphError(f"formula is not valid syntax{where}: {e.msg}") from None
        except (RecursionError, MemoryError):
            raise too_deep from None
        except ValueError as e:  # e.g. a NUL character
            raise GraphError(f"formula cannot be parsed: {e}") from None
        builder = _FormulaBuilder()
        try:
            out = builder.build(tree.body)
        except RecursionError:
            raise too_deep from None
        if out < NUM_INITIAL:
            raise GraphError(f"formula {_excerpt(formula)!r} has no op; a layer needs at least one")
        return cls(tuple(builder.nodes))  # the whole expression is always the newest node

    def formula(self) -> str:
        """The output expression as a formula (dead nodes do not appear)."""
        sizes = self._formula_sizes()
        if sizes[self.output] > MAX_FORMULA_CHARS:
            raise GraphError(
                f"formula would exceed {MAX_FORMULA_CHARS} characters "
                "(heavily shared subexpressions); use the JSON form"
            )
        texts: dict[int, tuple[str, int]] = {}
        for i in sorted(self.live):
            texts[i] = self._render(i, texts)
        return texts[self.output][0]

    def _formula_sizes(self) -> list[int]:
        sizes = [1, 1, 2, 2]
        for node in self.nodes:
            sizes.append(len(node.label) + 8 + sum(sizes[i] for i in node.inputs))
        return sizes

    def _render(self, i: int, texts: dict[int, tuple[str, int]]) -> tuple[str, int]:
        if i < NUM_INITIAL:
            return INITIAL_NODES[i], PREC_ATOM
        node = self.node(i)

        def wrap(j: int, paren_at_or_below: int) -> str:
            text, prec = texts[j]
            return f"({text})" if prec <= paren_at_or_below else text

        spec = ELEMENTWISE.get(node.op)
        if spec is None or spec.symbol is None:  # statistics and ops printed as calls
            return f"{node.label}({', '.join(texts[j][0] for j in node.inputs)})", PREC_ATOM
        prec = spec.precedence
        if spec.arity == 1:  # prefix; a nested prefix is parenthesised: -(-x)
            return spec.symbol + wrap(node.inputs[0], prec), prec
        a, b = node.inputs
        symbol = spec.symbol
        if node.op == "add" and b >= NUM_INITIAL and self.node(b).op == "neg":
            symbol, b = "-", self.node(b).inputs[0]  # add(a, neg(c)) prints as a - c
        # Operators associate to the left: the right operand is parenthesised at equal precedence.
        return f"{wrap(a, prec - 1)} {symbol} {wrap(b, prec)}", prec

    def __str__(self) -> str:
        return self.formula()

    def __repr__(self) -> str:
        sizes = self._formula_sizes()
        if sizes[self.output] <= 200:
            return f"LayerGraph.parse({self.formula()!r})"
        return f"<LayerGraph with {len(self.nodes)} nodes>"

    # ------------------------------------------------------------------ normal forms
    def pruned(self) -> LayerGraph:
        """The same graph without dead nodes, renumbered in the original order."""
        keep = [i for i in range(NUM_INITIAL, self.output + 1) if i in self.live]
        new_index = {i: i for i in range(NUM_INITIAL)}
        new_index.update({old: NUM_INITIAL + k for k, old in enumerate(keep)})
        return LayerGraph(
            tuple(
                Node(n.op, tuple(new_index[j] for j in n.inputs), n.axis)
                for n in (self.node(i) for i in keep)
            )
        )

    def canonical(self) -> LayerGraph:
        """Dead nodes pruned, identical nodes merged, commutative inputs ordered, nodes
        renumbered in a deterministic topological order.  Idempotent."""
        idents, ranks = self._structure
        # The first node computing each expression stands for all that compute it; its
        # inputs, read through the same merging, in canonical order.
        representative: dict[str, int] = {}
        ordered: dict[int, list[int]] = {}
        for i in sorted(self.live):
            if i < NUM_INITIAL or idents[i] in representative:
                continue
            representative[idents[i]] = i
            node = self.node(i)
            inputs = [representative.get(idents[j], j) for j in node.inputs]
            ordered[i] = sorted(inputs, key=ranks.__getitem__) if _is_commutative(node) else inputs

        # Iterative post-order DFS from the output, inputs visited in canonical order.  A
        # DAG never has a node on the stack twice, so a node is numbered when popped.
        new_index = {i: i for i in range(NUM_INITIAL)}
        order: list[int] = []
        out = representative[idents[self.output]]
        stack: list[tuple[int, Iterator[int]]] = [(out, iter(ordered[out]))]
        while stack:
            i, pending = stack[-1]
            child = next((j for j in pending if j not in new_index), None)
            if child is None:
                stack.pop()
                new_index[i] = NUM_INITIAL + len(order)
                order.append(i)
            else:
                stack.append((child, iter(ordered[child])))
        nodes = (
            Node(self.node(i).op, tuple(new_index[j] for j in ordered[i]), self.node(i).axis)
            for i in order
        )
        return LayerGraph._trusted(tuple(nodes))

    @classmethod
    def _trusted(cls, nodes: tuple[Node, ...]) -> LayerGraph:
        """A graph from nodes this module built from a validated graph: no re-validation."""
        graph = object.__new__(cls)
        object.__setattr__(graph, "nodes", nodes)
        return graph

    @property
    def expression_ids(self) -> list[bytes | None]:
        """Per live node (initial nodes included), an identity of the expression it
        computes: equal for nodes computing the same expression tree (up to the order of
        commutative inputs), in any graph, whatever the numbering; None for dead nodes.
        Used to memoise node values."""
        return self._structure[0]

    @property
    def input_ranks(self) -> list:
        """Per live node, the sort key that puts commutative inputs in canonical order."""
        return self._structure[1]

    @cached_property
    def _structure(self) -> tuple[list, list]:
        """Per live node, an identity that depends only on the expression it computes (up
        to the order of commutative inputs), never on numbering: the SHA-256 digest of its
        op and its inputs' identities.  And a rank ordering commutative inputs so that
        canonical formulas read naturally: negations last (``x - m``), then the larger
        expression first, then x, v0, v1, 0 (``x * v1 + v0``, ``max(..., 0)``).  Dead
        nodes get None."""
        idents: list[bytes | None] = [b"x", b"0", b"v0", b"v1", *[None] * len(self.nodes)]
        ranks: list = [(False, 0, b"0x"), (False, 0, b"30"), (False, 0, b"1v0"), (False, 0, b"2v1")]
        ranks += [None] * len(self.nodes)
        sizes = [1] * (NUM_INITIAL + len(self.nodes))
        live = self.live
        for i in range(NUM_INITIAL, self.output + 1):
            if i not in live:
                continue
            node = self.node(i)
            inputs = node.inputs
            if _is_commutative(node):
                inputs = sorted(inputs, key=ranks.__getitem__)
            text = b"%s(%s)" % (_label_bytes(node), b",".join([idents[j] for j in inputs]))
            idents[i] = ident = hashlib.sha256(text).digest()
            sizes[i] = 1 + sum(sizes[j] for j in node.inputs)
            ranks[i] = (node.op == "neg", -sizes[i], b"4" + ident)
        return idents, ranks

    def structural_hash(self) -> str:
        """A hash equal exactly for graphs with the same canonical form.

        A Merkle hash of the canonical form: SHA-256 over each live node's op and its
        inputs' hashes (commutative inputs in canonical order), read at the output, as 32
        hex digits.  One pass over the genome, without building the canonical graph."""
        return self._structure[0][self.output][:16].hex()

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


@functools.cache
def _label_bytes_for(op: str, axis: str | None) -> bytes:
    return (f"{op}_{axis}" if axis else op).encode()


def _label_bytes(node: Node) -> bytes:
    return _label_bytes_for(node.op, node.axis)


def _is_commutative(node: Node) -> bool:
    op = ELEMENTWISE.get(node.op)
    return bool(op and op.commutative)


def _check_node(index: int, node: Node) -> None:
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


def _node_from_json(index: int, raw: Any) -> Node:
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
    _check_node(index, node)
    return node


_NAMES = {name: i for i, name in enumerate(INITIAL_NODES) if name != "0"}


def _excerpt(text: str, limit: int = 60) -> str:
    """``text`` shortened for an error message that quotes user input."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Binary infix operators come from the registry's symbols; "-" is neg, and a - b is a + -b.
_AST_OPERATORS = {"+": ast.Add, "*": ast.Mult, "/": ast.Div}
_BINARY = {
    _AST_OPERATORS[op.symbol]: name
    for name, op in ELEMENTWISE.items()
    if op.symbol and op.arity == 2
}


class _FormulaBuilder:
    """Turns a whitelisted Python expression AST into nodes, merging repeated subexpressions."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._index: dict[Node, int] = {}

    def add(self, op: str, inputs: tuple[int, ...], axis: str | None = None) -> int:
        node = Node(op, inputs, axis)
        if node not in self._index:
            self._index[node] = NUM_INITIAL + len(self.nodes)
            self.nodes.append(node)
        return self._index[node]

    def build(self, e: ast.expr) -> int:
        where = f"at column {getattr(e, 'col_offset', 0) + 1}"
        if isinstance(e, ast.Name):
            if e.id not in _NAMES:
                raise GraphError(
                    f"unknown name {e.id!r} {where} (names are x, v0, v1; the zero node is 0)"
                )
            return _NAMES[e.id]
        if isinstance(e, ast.Constant):
            if type(e.value) in (int, float) and e.value == 0:
                return ZERO
            raise GraphError(f"constant {e.value!r} {where}: the only constant is 0")
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub | ast.UAdd):
            operand = self.build(e.operand)
            return self.add("neg", (operand,)) if isinstance(e.op, ast.USub) else operand
        if isinstance(e, ast.BinOp):
            if isinstance(e.op, ast.Sub):
                left, right = self.build(e.left), self.build(e.right)
                return self.add("add", (left, self.add("neg", (right,))))
            if type(e.op) in _BINARY:
                return self.add(_BINARY[type(e.op)], (self.build(e.left), self.build(e.right)))
            column = e.left.end_col_offset  # 0-based exclusive end = 1-based last column
            raise GraphError(
                f"operator {type(e.op).__name__} after column {column} is not supported "
                "(use + - * / and the op functions)"
            )
        if isinstance(e, ast.Call):
            return self._call(e, where)
        raise GraphError(f"unsupported syntax {type(e).__name__} {where}")

    def _call(self, e: ast.Call, where: str) -> int:
        if not isinstance(e.func, ast.Name):
            raise GraphError(f"only plain function names can be called {where}")
        name = e.func.id
        if e.keywords or any(isinstance(a, ast.Starred) for a in e.args):
            raise GraphError(f"{name}() {where} takes positional arguments only")
        op, _, axis = name.partition("_")
        if op in STATISTICS and axis:
            if axis not in AXES:
                raise GraphError(
                    f"unknown axis {axis!r} in {name}() {where} (axes: {', '.join(AXES)})"
                )
        elif name in ELEMENTWISE:
            op, axis = name, None
        else:
            stats = ", ".join(f"{s}_<axis>" for s in STATISTICS)
            raise GraphError(
                f"unknown function {name!r} {where} "
                f"(ops: {', '.join(ELEMENTWISE)}; statistics: {stats})"
            )
        arity = OPS[op].arity
        if len(e.args) != arity:
            raise GraphError(
                f"{name}() {where} takes {arity} argument"
                f"{'s' if arity > 1 else ''}, got {len(e.args)}"
            )
        return self.add(op, tuple(self.build(a) for a in e.args), axis or None)
