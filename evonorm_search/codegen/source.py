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
    reduce_kernels: dict[str, tuple[str, ...]]  # mode -> one kernel per pass, in order
    forward_kernel: str


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
            "block_mean = tl.sum(e, axis=0) / nb",
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
    reduction kernel per pass, and one element-wise forward kernel."""
    plans = {"train": schedule(graph, training=True), "eval": schedule(graph, training=False)}
    canonical = plans["train"].graph
    statistics = plans["train"].statistics
    moment_params = " ".join(f"m{k}_ptr," for k in statistics)
    parts = [(resource_dir("kernels") / "prelude.py").read_text()]
    names: dict[str, tuple[str, ...]] = {}
    for mode, plan in plans.items():
        kernel_names = []
        for number, p in enumerate(plan.passes):
            name = f"reduce_{mode}_{number}_{p.axis}"
            parts.append(_reduce_kernel(plan, p, name, moment_params))
            kernel_names.append(name)
        names[mode] = tuple(kernel_names)
    everything = list(range(NUM_INITIAL, NUM_INITIAL + len(canonical.nodes)))
    rows = _statistic_rows(canonical, everything)
    parts.append(_template("forward.py.tmpl").substitute(
        name="forward", moment_params=moment_params,
        body=_indent([_node_code(canonical, i, rows) for i in everything], 4),
        output=f"t{canonical.output}",
    ))  # fmt: skip
    header = f"# Generated by evonorm-search for: {canonical.formula()}\n"
    text = header + "".join(parts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return LayerSource(text, digest, plans["train"], plans["eval"], names, "forward")
