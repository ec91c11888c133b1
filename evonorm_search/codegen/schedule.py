"""Lowering a layer graph into passes over the data.

A statistic needs its whole reduction group before anything downstream can use it, so a
graph runs as *stages*: stage k computes, in one pass over x, every statistic whose input
depends only on x, the parameters and statistics of earlier stages, whatever their axis
kinds.  A final element-wise pass produces the output.  Nested statistics (a statistic of
an expression that uses another statistic) are what make more than one stage.

In eval mode batch statistics come from their running estimates: they need no pass, and
what depends only on them moves to an earlier stage.  Pure Python: no triton needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from evonorm_search.graph import NUM_INITIAL, LayerGraph
from evonorm_search.ops import AXES, keeps_running

__all__ = ["ReductionPass", "Schedule", "schedule"]


@dataclass(frozen=True)
class ReductionPass:
    """One pass over x: the statistics of one stage."""

    stage: int
    axes: tuple[str, ...]  # the axis kinds among them, in AXES order
    statistics: tuple[int, ...]  # node indices, ascending


@dataclass(frozen=True)
class Schedule:
    graph: LayerGraph  # canonical
    training: bool
    passes: tuple[ReductionPass, ...]  # in execution order
    stage_of: dict[int, int]  # statistic node -> its stage (-1: a running estimate)

    @property
    def stages(self) -> int:
        return 1 + max((p.stage for p in self.passes), default=-1)

    @property
    def statistics(self) -> tuple[int, ...]:
        """Every statistic node, computed or read from a running estimate."""
        return tuple(sorted(self.stage_of))

    def from_running(self, index: int) -> bool:
        return self.stage_of[index] < 0

    def cone(self, values: tuple[int, ...]) -> list[int]:
        """The nodes past the initial ones that computing ``values`` needs, in topological
        order: element-wise nodes to evaluate and statistics whose values are loaded (the
        cone stops at statistics)."""
        needed: set[int] = set()
        stack = list(values)
        while stack:
            i = stack.pop()
            if i < NUM_INITIAL or i in needed:
                continue
            needed.add(i)
            if self.graph.node(i).axis is None:
                stack.extend(self.graph.node(i).inputs)
        return sorted(needed)


def schedule(graph: LayerGraph, *, training: bool) -> Schedule:
    """Stages of the canonical ``graph``: a statistic's stage is the number of computed
    statistics nested below it."""
    graph = graph.canonical()
    depth = [0] * NUM_INITIAL  # statistic levels below a value
    stage_of: dict[int, int] = {}
    for index, node in enumerate(graph.nodes, start=NUM_INITIAL):
        below = max(depth[j] for j in node.inputs)
        if node.axis is None:
            depth.append(below)
        elif keeps_running(node.axis) and not training:
            stage_of[index] = -1  # the running estimate: known before any pass
            depth.append(0)
        else:
            stage_of[index] = below
            depth.append(below + 1)
    passes = []
    for stage in range(1 + max(stage_of.values(), default=-1)):
        members = tuple(sorted(i for i, s in stage_of.items() if s == stage))
        axes = tuple(a for a in AXES if any(graph.node(i).axis == a for i in members))
        passes.append(ReductionPass(stage, axes, members))
    return Schedule(graph, training, tuple(passes), stage_of)
