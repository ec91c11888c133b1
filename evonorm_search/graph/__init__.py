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

The package: ``nodes`` (the parts and their checks), ``genome`` (``LayerGraph``),
``formula`` (the parser and printer) and ``canonical`` (the normal form and hash).

Two text forms: JSON (format ``evonorm-graph/1``) and formulas such as
``x * sigmoid(v1 * x) / std_group(x)``, parsed with :mod:`ast` against a whitelist and
never evaluated.
"""

from evonorm_search.graph.genome import LayerGraph, as_graph
from evonorm_search.graph.nodes import (
    FORMAT,
    INITIAL_NODES,
    MAX_FORMULA_CHARS,
    NUM_INITIAL,
    STATISTIC_CLASSES,
    X_CLASS,
    Node,
    ShapeClass,
)

__all__ = [
    "FORMAT",
    "INITIAL_NODES",
    "MAX_FORMULA_CHARS",
    "NUM_INITIAL",
    "STATISTIC_CLASSES",
    "X_CLASS",
    "LayerGraph",
    "Node",
    "ShapeClass",
    "as_graph",
]
