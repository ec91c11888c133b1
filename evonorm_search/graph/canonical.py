"""The canonical form and the structural hash: dead nodes pruned, identical nodes merged,
commutative inputs ordered, nodes renumbered in a deterministic topological order, so that
two graphs computing the same expression tree have the same canonical JSON and hash."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING

from evonorm_search.graph.nodes import NUM_INITIAL, Node
from evonorm_search.ops import ELEMENTWISE

if TYPE_CHECKING:
    from evonorm_search.graph.genome import LayerGraph


class CanonicalForm:
    """``LayerGraph``'s normal forms (a mixin: it reads ``nodes``, ``live``, ``node`` and
    ``output``)."""

    def pruned(self) -> LayerGraph:
        """The same graph without dead nodes, renumbered in the original order."""
        keep = [i for i in range(NUM_INITIAL, self.output + 1) if i in self.live]
        new_index = {i: i for i in range(NUM_INITIAL)}
        new_index.update({old: NUM_INITIAL + k for k, old in enumerate(keep)})
        return type(self)(
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
        return type(self)._trusted(tuple(nodes))

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


@functools.cache
def _label_bytes_for(op: str, axis: str | None) -> bytes:
    return (f"{op}_{axis}" if axis else op).encode()


def _label_bytes(node: Node) -> bytes:
    return _label_bytes_for(node.op, node.axis)


def _is_commutative(node: Node) -> bool:
    op = ELEMENTWISE.get(node.op)
    return bool(op and op.commutative)
