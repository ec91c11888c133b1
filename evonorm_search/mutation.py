"""Random layer graphs and the mutation operators of the evolutionary search.

As in the EvoNorm paper (Liu et al. 2020, section 3.2), a mutation picks one node and
changes its op, rewires one of its inputs, or replaces it by a fresh random node; this
project adds insertion and deletion of nodes within the space's size limit.  The space's
``[mutation]`` weights choose between them.

Every graph these functions return is a valid layer of its space: only the space's ops,
statistics and axes (dead nodes included), at most ``max_nodes`` nodes, an output shaped
like x that depends on x.  Randomness comes only from the ``numpy.random.Generator``
passed in, so a seed fixes the sequence in every process.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache

import numpy as np

from evonorm_search.errors import GraphError
from evonorm_search.graph import NUM_INITIAL, LayerGraph, Node
from evonorm_search.ops import OPS, STATISTICS
from evonorm_search.space import GraphLimits, MutationWeights, SearchSpace

__all__ = ["MUTATIONS", "mutate", "random_graph"]

# Random graphs and mutations that fail to be valid layers are redrawn; a space in which
# this many draws in a row fail is unusable and raises.
MAX_ATTEMPTS = 1000

Choice = tuple[str, str | None]  # (op, axis)


@dataclass(frozen=True)
class _Pool:
    """What a space lets a node be: op names (all, and by arity) and the statistics' axes.
    Ops are drawn uniformly by name, then a statistic draws its axis."""

    names: tuple[str, ...]
    by_arity: dict[int, tuple[str, ...]]
    axes: tuple[str, ...]


@cache
def _pool(limits: GraphLimits) -> _Pool:
    names = (*limits.ops, *(s for s in limits.statistics if limits.axes))
    by_arity = {a: tuple(n for n in names if OPS[n].arity == a) for a in (1, 2)}
    return _Pool(names, by_arity, limits.axes)


def _pick(rng: np.random.Generator, options: tuple | list):
    return options[int(rng.integers(len(options)))]


def _random_op(pool: _Pool, names: tuple[str, ...], rng: np.random.Generator) -> Choice:
    op = _pick(rng, names)
    return op, _pick(rng, pool.axes) if op in STATISTICS else None


def _random_node(pool: _Pool, index: int, rng: np.random.Generator) -> Node:
    """A node at graph index ``index``: an op drawn uniformly from the space's op names, an
    axis uniformly for a statistic, inputs uniformly from the earlier nodes."""
    op, axis = _random_op(pool, pool.names, rng)
    return Node(op, tuple(int(rng.integers(index)) for _ in range(OPS[op].arity)), axis)


def _is_layer(graph: LayerGraph) -> bool:
    return graph.layer_problem() is None


def random_graph(space: SearchSpace, rng: np.random.Generator) -> LayerGraph:
    """A random valid layer of ``space``: 1 to ``max_nodes`` random nodes (uniformly), drawn
    again until the graph is a valid layer."""
    pool = _pool(space.graph)
    for _ in range(MAX_ATTEMPTS):
        size = int(rng.integers(1, space.graph.max_nodes + 1))
        graph = LayerGraph(tuple(_random_node(pool, NUM_INITIAL + k, rng) for k in range(size)))
        if _is_layer(graph):
            return graph
    raise GraphError(f"search space {space.name!r}: no valid layer in {MAX_ATTEMPTS} random draws")


def _text(node: Node) -> str:
    return f"{node.label}({', '.join(map(str, node.inputs))})"


def _replace(graph: LayerGraph, index: int, node: Node) -> LayerGraph:
    nodes = list(graph.nodes)
    nodes[index - NUM_INITIAL] = node
    return LayerGraph(tuple(nodes))


Mutation = tuple[LayerGraph, str]


def _change_op(graph: LayerGraph, pool: _Pool, limits: GraphLimits, rng) -> Mutation | None:
    index = int(rng.integers(NUM_INITIAL, graph.output + 1))
    old = graph.node(index)
    op, axis = _random_op(pool, pool.by_arity[len(old.inputs)], rng)
    if (op, axis) == (old.op, old.axis):
        return None  # drawn again by mutate()
    new = Node(op, old.inputs, axis)
    return _replace(graph, index, new), f"change_op node {index}: {_text(old)} -> {_text(new)}"


def _rewire(graph: LayerGraph, pool: _Pool, limits: GraphLimits, rng) -> Mutation | None:
    index = int(rng.integers(NUM_INITIAL, graph.output + 1))
    old = graph.node(index)
    slot = int(rng.integers(len(old.inputs)))
    source = _pick(rng, [j for j in range(index) if j != old.inputs[slot]])
    inputs = list(old.inputs)
    inputs[slot] = source
    new = Node(old.op, tuple(inputs), old.axis)
    return _replace(graph, index, new), f"rewire node {index}: {_text(old)} -> {_text(new)}"


def _resample(graph: LayerGraph, pool: _Pool, limits: GraphLimits, rng) -> Mutation | None:
    index = int(rng.integers(NUM_INITIAL, graph.output + 1))
    old, new = graph.node(index), _random_node(pool, index, rng)
    return _replace(graph, index, new), f"resample node {index}: {_text(old)} -> {_text(new)}"


def _shifted(node: Node, at: int, by: int) -> Node:
    """``node`` with every input index >= ``at`` moved by ``by``."""
    return Node(node.op, tuple(j + by if j >= at else j for j in node.inputs), node.axis)


def _insert(graph: LayerGraph, pool: _Pool, limits: GraphLimits, rng) -> Mutation | None:
    """A random node at a random place; one input of a later node reads it (a new output
    reads the old one), so that it is not born dead."""
    if len(graph) >= limits.max_nodes:
        return None
    index = int(rng.integers(NUM_INITIAL, graph.output + 2))  # output + 1: a new output
    new = _random_node(pool, index, rng)
    nodes = [*graph.nodes[: index - NUM_INITIAL], new]
    nodes += [_shifted(n, index, 1) for n in graph.nodes[index - NUM_INITIAL :]]
    if index == graph.output + 1:
        inputs = list(new.inputs)
        inputs[int(rng.integers(len(inputs)))] = graph.output
        nodes[-1] = new = Node(new.op, tuple(inputs), new.axis)
        reader = "the new output"
    else:
        position = int(rng.integers(index + 1, graph.output + 2)) - NUM_INITIAL
        reader_node = nodes[position]
        inputs = list(reader_node.inputs)
        inputs[int(rng.integers(len(inputs)))] = index
        nodes[position] = Node(reader_node.op, tuple(inputs), reader_node.axis)
        reader = f"read by node {position + NUM_INITIAL}"
    return LayerGraph(tuple(nodes)), f"insert node {index}: {_text(new)}, {reader}"


def _delete(graph: LayerGraph, pool: _Pool, limits: GraphLimits, rng) -> Mutation | None:
    """Remove a node; its readers read one of its inputs instead."""
    if len(graph) <= 1:
        return None
    index = int(rng.integers(NUM_INITIAL, graph.output + 1))
    old = graph.node(index)
    replacement = _pick(rng, old.inputs)
    nodes = list(graph.nodes[: index - NUM_INITIAL])
    for n in graph.nodes[index - NUM_INITIAL + 1 :]:
        rewired = Node(n.op, tuple(replacement if j == index else j for j in n.inputs), n.axis)
        nodes.append(_shifted(rewired, index + 1, -1))
    return LayerGraph(tuple(nodes)), f"delete node {index}: {_text(old)}"


@cache
def _mutation_table(weights: MutationWeights) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Operator names and their cumulative weights (``rng.choice(p=...)`` is slow)."""
    names = tuple(f.name for f in fields(weights))
    return names, tuple(itertools.accumulate(getattr(weights, name) for name in names))


MUTATIONS: dict[str, Callable[..., Mutation | None]] = {
    "change_op": _change_op,
    "rewire": _rewire,
    "resample": _resample,
    "insert": _insert,
    "delete": _delete,
}


def mutate(graph: LayerGraph, space: SearchSpace, rng: np.random.Generator) -> Mutation:
    """A valid child of ``graph`` in ``space`` whose canonical form differs from the
    parent's, and a description of the mutation (``"change_op node 6: sigmoid(5) ->
    tanh(5)"``).  Mutations that yield an invalid layer, or change dead nodes only (the
    child would be screened out as a structural duplicate of its parent), are redrawn."""
    space.check(graph)
    pool = _pool(space.graph)
    names, cumulative = _mutation_table(space.mutation)
    for _ in range(MAX_ATTEMPTS):
        kind = names[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
        result = MUTATIONS[kind](graph, pool, space.graph, rng)
        if result is None or not _is_layer(result[0]):
            continue
        if result[0].structural_hash() != graph.structural_hash():
            return result
    raise GraphError(f"no valid mutation of {graph.formula()!r} in {MAX_ATTEMPTS} tries")
