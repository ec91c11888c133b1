"""Triton source for a layer graph, generated from the op registry's templates.

The templates live in the top-level ``kernels/`` folder; this module fills them in with
code built only from validated node indices and the registry's expressions, never from
strings out of a graph.  Generation is deterministic: the same canonical graph gives the
same source, byte for byte, so the source's hash names its cache file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from string import Template

from evonorm_search.codegen.schedule import ReductionPass, Schedule, schedule
from evonorm_search.graph import NUM_INITIAL, LayerGraph
from evonorm_search.ops import ELEMENTWISE, STATISTICS
from evonorm_search.resources import resource_dir

__all__ = ["MOMENT_KIND", "LayerSource", "generate"]

# Where an element at flat offset ``off`` of x (N, C, S) finds the statistic of its
# reduction group, per axis kind.
_ROW_OF_ELEMENT = {
    "instance": "off // S",
    "group": "off // (CG * S)",
    "layer": "off // (C * S)",
    "batch": "(off // S) % C",
    "channel": "(off // (C * S)) * S + off % S",
}
# The element ``j`` of reduction group ``row`` (L elements per row).
_ELEMENT_OF_ROW = {
    "instance": "row * L + j",
    "group": "row * L + j",
    "layer": "row * L + j",
    "batch": "(j // S) * (C * S) + row * S + j % S",
    "channel": "(row // S) * (C * S) + j * S + row % S",
}
MOMENT_KIND = {"mean": 0, "var": 1, "meansq": 2}  # _merge_partials' KIND


@dataclass(frozen=True)
class LayerSource:
    """A layer's generated module: its source, content hash and kernel names."""

    text: str
    digest: str
    training: Schedule
    eval: Schedule
    # mode (train, eval) -> (kernel, pass) per reduction pass, in the order they run: the
    # forward passes by stage, the backward ones latest stage first.  The element-wise
    # kernels are ``forward`` and ``backward_<mode>``.
    reduce_kernels: dict[str, tuple[tuple[str, ReductionPass], ...]]
    backward_reduce_kernels: dict[str, tuple[tuple[str, ReductionPass], ...]]


def _template(name: str) -> Template:
    return Template((resource_dir("kernels") / name).read_text())


def _indent(lines: list[str], spaces: int) -> str:
    return ("\n" + " " * spaces).join(lines)


def _node_code(graph: LayerGraph, index: int, statistic_rows: dict[int, str]) -> str:
    """``t<index> = ...``: an element-wise op from the registry's template, or a statistic
    loaded from its moment and finished (sqrt(moment + eps) for rms and std)."""
    node = graph.node(index)
    if node.axis is None:
        args = dict(zip("ab", (f"t{j}" for j in node.inputs), strict=False))
        return f"t{index} = {ELEMENTWISE[node.op].triton.format(**args)}"
    moment = f"tl.load(m{index}_ptr + {statistic_rows[index]}, mask=mask, other=0.0).to(COMPUTE)"
    if STATISTICS[node.op].root:
        moment = f"tl.sqrt({moment} + eps)"
    return f"t{index} = {moment}"


def _statistic_rows(graph: LayerGraph, indices: list[int]) -> dict[int, str]:
    return {i: _ROW_OF_ELEMENT[graph.node(i).axis] for i in indices
            if graph.node(i).axis is not None}  # fmt: skip


def _reduce_kernel(plan: Schedule, p: ReductionPass, name: str, moment_params: str) -> str:
    graph = plan.graph
    sources = sorted({graph.node(k).inputs[0] for k in p.statistics})  # distinct inputs
    cone = plan.cone(tuple(sources))
    rows = _statistic_rows(graph, cone)
    body = [_node_code(graph, i, rows) for i in cone]
    accumulators, merges = ["count = tl.zeros([], COMPUTE)"], []
    for u in sources:
        accumulators += [f"mean{u} = tl.zeros([], COMPUTE)", f"m2_{u} = tl.zeros([], COMPUTE)"]
        merges += [
            f"e = tl.where(mask, t{u}, 0.0)  # input of the statistics of node {u}",
            # Sums shifted by the block's first value: exact for constant rows (whose
            # variance must be 0, not rounding noise), and more accurate elsewhere.
            "pivot = tl.sum(tl.where(j == start, e, 0.0), axis=0)",
            "pivot = tl.where(tl.abs(pivot) < float('inf'), pivot, 0.0)",
            "block_mean = pivot + tl.sum(tl.where(mask, e - pivot, 0.0), axis=0) / nb",
            "d = tl.where(mask, e - block_mean, 0.0)",
            f"delta = block_mean - mean{u}",
            f"mean{u} = mean{u} + delta * (nb / total)",
            f"m2_{u} = m2_{u} + tl.sum(d * d, axis=0) + delta * delta * (count * nb / total)",
        ]
    stores = []
    for k in p.statistics:
        u = graph.node(k).inputs[0]
        moment = STATISTICS[graph.node(k).op].moment
        value = {"mean": f"mean{u}", "var": f"m2_{u} / count",
                 "meansq": f"m2_{u} / count + mean{u} * mean{u}"}[moment]  # fmt: skip
        stores.append(f"tl.store(m{k}_ptr + row, {value})")
        if moment == "var":  # the backward pass needs the mean it was taken around
            stores.append(f"tl.store(a{k}_ptr + row, mean{u})")
    partial_stores = []
    for position, u in enumerate(sources):
        base = f"{3 * position} * ROWS"
        for offset, value in enumerate(("count", f"mean{u}", f"m2_{u}")):
            partial_stores.append(
                f"tl.store(part_ptr + ({base} + {offset} * ROWS + row) * SPLIT + part, {value})"
            )
    return _template("reduce.py.tmpl").substitute(
        name=name, moment_params=moment_params, stage=p.stage, axis=p.axis,
        statistics=", ".join(f"{graph.label(k)} (node {k})" for k in p.statistics),
        accumulators=_indent(accumulators, 4), offsets=_ELEMENT_OF_ROW[p.axis],
        body=_indent(body or ["pass"], 8), merges=_indent(merges, 8),
        stores=_indent(stores, 8), partial_stores=_indent(partial_stores, 8),
    )  # fmt: skip


def generate(graph: LayerGraph) -> LayerSource:
    """The kernels of a (valid) layer graph: for training and for eval mode, one
    reduction kernel per pass forward and backward, an element-wise backward kernel, and
    the element-wise forward kernel (the same in both modes)."""
    plans = {"train": schedule(graph, training=True), "eval": schedule(graph, training=False)}
    canonical = plans["train"].graph
    statistics = plans["train"].statistics
    moment_params = " ".join(f"m{k}_ptr, a{k}_ptr, d{k}_ptr," for k in statistics)
    parts = [(resource_dir("kernels") / "prelude.py").read_text()]
    forward_reduce: dict[str, tuple[tuple[str, ReductionPass], ...]] = {}
    for mode, plan in plans.items():
        kernels = []
        for number, p in enumerate(plan.passes):
            name = f"reduce_{mode}_{number}_{p.axis}"
            parts.append(_reduce_kernel(plan, p, name, moment_params))
            kernels.append((name, p))
        forward_reduce[mode] = tuple(kernels)
    everything = list(range(NUM_INITIAL, NUM_INITIAL + len(canonical.nodes)))
    rows = _statistic_rows(canonical, everything)
    forward_body = [_node_code(canonical, i, rows) for i in everything]
    parts.append(_template("forward.py.tmpl").substitute(
        name="forward", moment_params=moment_params, body=_indent(forward_body, 4),
        output=f"t{canonical.output}",
    ))  # fmt: skip
    backward_reduce: dict[str, tuple[tuple[str, ReductionPass], ...]] = {}
    for mode, plan in plans.items():
        kernels = []
        for number, p in enumerate(reversed(plan.passes)):
            name = f"backward_{mode}_{number}_{p.axis}"
            parts.append(_backward_reduce_kernel(plan, p, name, moment_params, forward_body))
            kernels.append((name, p))
        backward_reduce[mode] = tuple(kernels)
        parts.append(_backward_kernel(plan, f"backward_{mode}", moment_params, forward_body))
    header = f"# Generated by evonorm-search for: {canonical.formula()}\n"
    text = header + "".join(parts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return LayerSource(text, digest, plans["train"], plans["eval"], forward_reduce,
                       backward_reduce)  # fmt: skip


_ROW_LENGTH = {"instance": "S", "group": "(CG * S)", "layer": "(C * S)", "batch": "(N * S)",
               "channel": "C"}  # fmt: skip


def _sweep(plan: Schedule, targets: tuple[int, ...]) -> tuple[list[str], dict[int, str]]:
    """Reverse-mode code for one element: the adjoint ``g<i>`` of every node downstream of
    the statistics ``targets`` (all nodes when empty), from the output's adjoint ``g``.
    Statistics of later stages than the targets pass their loaded adjoints ``d<k>`` on to
    their inputs; the others are leaves.  Returns the lines and each node's adjoint."""
    graph = plan.graph
    lowest = min((plan.stage_of[k] for k in targets), default=-1)
    contributions: dict[int, list[str]] = {graph.output: ["g"]}
    lines: list[str] = []
    adjoint: dict[int, str] = {}
    for i in range(graph.output, NUM_INITIAL - 1, -1):
        terms = contributions.get(i)
        if not terms:
            continue
        lines.append(f"g{i} = {' + '.join(terms)}")
        adjoint[i] = f"g{i}"
        node = graph.node(i)
        if node.axis is None:
            values = dict(zip("ab", (f"t{j}" for j in node.inputs), strict=False))
            for rule, j in zip(ELEMENTWISE[node.op].grad, node.inputs, strict=True):
                contributions.setdefault(j, []).append(
                    "(" + rule.format(g=f"g{i}", y=f"t{i}", **values) + ")"
                )
            continue
        if i in targets or plan.from_running(i) or plan.stage_of[i] <= lowest:
            continue
        stat = STATISTICS[node.op]
        row = _ROW_OF_ELEMENT[node.axis]
        length = _ROW_LENGTH[node.axis]
        load = f"tl.load(d{i}_ptr + {row}, mask=mask, other=0.0).to(COMPUTE)"
        lines.append(f"dm{i} = {load}" + (f" / (2.0 * t{i})" if stat.root else ""))
        u = node.inputs[0]
        if stat.moment == "mean":
            term = f"dm{i} / {length}"
        elif stat.moment == "var":
            mean = f"tl.load(a{i}_ptr + {row}, mask=mask, other=0.0).to(COMPUTE)"
            term = f"2.0 / {length} * dm{i} * (t{u} - {mean})"
        else:
            term = f"2.0 * (dm{i} / {length}) * t{u}"
        contributions.setdefault(u, []).append(f"({term})")
    for j in (0, 2, 3):
        if j in contributions:
            lines.append(f"g{j} = {' + '.join(contributions[j])}")
            adjoint[j] = f"g{j}"
    return lines, adjoint


def _backward_reduce_kernel(plan: Schedule, p: ReductionPass, name: str, moment_params: str,
                            forward: list[str]) -> str:  # fmt: skip
    lines, adjoint = _sweep(plan, p.statistics)
    accumulators = [f"sum{k} = tl.zeros([], COMPUTE)" for k in p.statistics]
    sums = [f"sum{k} += tl.sum(tl.where(mask, {adjoint.get(k, '0.0 * t0')}, 0.0), axis=0)"
            for k in p.statistics]  # fmt: skip
    stores = [f"tl.store(part_ptr + ({position} * ROWS + row) * SPLIT + part, sum{k})"
              for position, k in enumerate(p.statistics)]  # fmt: skip
    return _template("backward_reduce.py.tmpl").substitute(
        name=name, moment_params=moment_params, stage=p.stage, axis=p.axis,
        statistics=", ".join(f"{plan.graph.label(k)} (node {k})" for k in p.statistics),
        accumulators=_indent(accumulators, 4), offsets=_ELEMENT_OF_ROW[p.axis],
        forward=_indent(forward, 8), backward=_indent(lines or ["pass"], 8),
        sums=_indent(sums, 8), stores=_indent(stores, 4),
    )  # fmt: skip


def _backward_kernel(plan: Schedule, name: str, moment_params: str, forward: list[str]) -> str:
    lines, adjoint = _sweep(plan, ())
    zero = "tl.zeros([BLOCK], COMPUTE)"
    return _template("backward.py.tmpl").substitute(
        name=name, moment_params=moment_params, forward=_indent(forward, 8),
        backward=_indent(lines, 8), dx=adjoint.get(0, zero), dv0=adjoint.get(2, zero),
        dv1=adjoint.get(3, zero), output=plan.graph.output,
    )  # fmt: skip
