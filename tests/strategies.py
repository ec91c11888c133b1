"""Hypothesis strategies for layer graphs and the graph rewrites that must not change a
graph's canonical form."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from evonorm_search.graph import NUM_INITIAL, LayerGraph, Node
from evonorm_search.ops import AXES, ELEMENTWISE, OPS, STATISTICS

OP_NAMES = sorted(OPS)


@st.composite
def nodes_after(draw: st.DrawFn, index: int, axes: tuple[str, ...] = AXES) -> Node:
    """A random node at graph index ``index`` (reading only earlier nodes)."""
    op = draw(st.sampled_from(OP_NAMES))
    inputs = tuple(draw(st.integers(0, index - 1)) for _ in range(OPS[op].arity))
    axis = draw(st.sampled_from(axes)) if op in STATISTICS else None
    return Node(op, inputs, axis)


@st.composite
def graphs(draw: st.DrawFn, max_nodes: int = 8, axes: tuple[str, ...] = AXES) -> LayerGraph:
    """Any well-formed graph: possibly dead nodes, possibly not a valid layer."""
    n = draw(st.integers(1, max_nodes))
    return LayerGraph(tuple(draw(nodes_after(NUM_INITIAL + k, axes)) for k in range(n)))


@st.composite
def layers(draw: st.DrawFn, max_nodes: int = 8, axes: tuple[str, ...] = AXES) -> LayerGraph:
    """A valid layer: a random graph, closed by a binary op with x when it is not one."""
    g = draw(graphs(max_nodes, axes))
    try:
        return g.validate()
    except ValueError:
        op = draw(st.sampled_from(["add", "mul", "div", "max"]))
        inputs = draw(st.permutations([0, g.output]))
        return LayerGraph((*g.nodes, Node(op, tuple(inputs)))).validate()


def swap_commutative(g: LayerGraph, rng: random.Random) -> LayerGraph:
    """Swap the inputs of a random subset of commutative nodes."""
    return LayerGraph(
        tuple(
            Node(n.op, n.inputs[::-1], n.axis)
            if n.op in ELEMENTWISE and ELEMENTWISE[n.op].commutative and rng.random() < 0.5
            else n
            for n in g.nodes
        )
    )


def reorder(g: LayerGraph, rng: random.Random) -> LayerGraph:
    """The same nodes in a random topological order (the output stays last)."""
    pending = list(range(NUM_INITIAL, g.output))
    placed = {i: i for i in range(NUM_INITIAL)}
    order = []
    while pending:
        ready = [i for i in pending if all(j in placed for j in g.node(i).inputs)]
        pick = rng.choice(ready)
        pending.remove(pick)
        placed[pick] = NUM_INITIAL + len(order)
        order.append(pick)
    order.append(g.output)
    placed[g.output] = NUM_INITIAL + len(order) - 1
    return LayerGraph(
        tuple(
            Node(g.node(i).op, tuple(placed[j] for j in g.node(i).inputs), g.node(i).axis)
            for i in order
        )
    )


def add_dead_nodes(g: LayerGraph, rng: random.Random, count: int) -> LayerGraph:
    """Insert ``count`` random nodes that the output does not read, at random places."""
    items: list[tuple[str, object]] = [("old", i) for i in range(NUM_INITIAL, g.output + 1)]
    for _ in range(count):
        items.insert(rng.randrange(len(items)), ("dead", None))  # never after the output
    new_index = {i: i for i in range(NUM_INITIAL)}
    nodes = []
    for position, (kind, old) in enumerate(items, start=NUM_INITIAL):
        if kind == "old":
            n = g.node(old)
            nodes.append(Node(n.op, tuple(new_index[j] for j in n.inputs), n.axis))
            new_index[old] = position
        else:
            op = rng.choice(OP_NAMES)
            inputs = tuple(rng.randrange(position) for _ in range(OPS[op].arity))
            nodes.append(Node(op, inputs, rng.choice(AXES) if op in STATISTICS else None))
    return LayerGraph(tuple(nodes))
