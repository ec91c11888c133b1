"""Formulas, the text form of a layer: ``x * sigmoid(v1 * x) / std_group(x)``, parsed with
:mod:`ast` against a whitelist and never evaluated, and printed back with the fewest
parentheses."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from evonorm_search.errors import GraphError
from evonorm_search.graph.nodes import INITIAL_NODES, MAX_FORMULA_CHARS, NUM_INITIAL, ZERO, Node
from evonorm_search.ops import AXES, ELEMENTWISE, OPS, PREC_ATOM, STATISTICS

if TYPE_CHECKING:
    from evonorm_search.graph.genome import LayerGraph


class Formula:
    """``LayerGraph``'s text form (a mixin: it reads ``nodes``, ``live``, ``node`` and
    ``output``)."""

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
