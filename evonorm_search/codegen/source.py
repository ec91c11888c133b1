"""Triton source for a layer graph, generated from the op registry's templates.

The templates live in the top-level ``kernels/`` folder; this module fills them in with
code built only from validated node indices and the registry's expressions, never from
strings out of a graph.  Generation is deterministic: the same canonical graph gives the
same source, byte for byte, so the source's hash names its cache file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from string import Template

from evonorm_search.codegen.schedule import ReductionPass, Schedule, schedule
from evonorm_search.errors import GraphError
from evonorm_search.graph import NUM_INITIAL, LayerGraph
from evonorm_search.ops import AXIS_KINDS, ELEMENTWISE, MOMENTS, STATISTICS, keeps_running
from evonorm_search.resources import resource_dir

__all__ = ["LayerSource", "generate", "on_chip_axis", "unsupported"]

_FULL_SIZE_ACCESS = re.compile(r"tl\.(?:load|store)\((?:x|y|dy|dx)_ptr\b")
# Axis kinds whose reduction groups one program can hold on chip: one stage of these (group
# and layer not both) runs as a single kernel when the group fits (the launcher decides).
ON_CHIP_AXES = tuple(name for name, kind in AXIS_KINDS.items() if kind.tile_row)


@dataclass(frozen=True)
class LayerSource:
    """A layer's generated module: its source, content hash and kernel names."""

    text: str
    digest: str
    training: Schedule
    eval: Schedule
    # mode (train, eval) -> (kernel, pass) per stage, in the order they run: the forward
    # passes by stage, the backward ones latest stage first.  The element-wise kernels are
    # ``forward`` and ``backward_<mode>``.
    reduce_kernels: dict[str, tuple[tuple[str, ReductionPass], ...]]
    backward_reduce_kernels: dict[str, tuple[tuple[str, ReductionPass], ...]]
    # The axis kind of the groups a program of the single-kernel path holds (``fused_forward``
    # and ``fused_backward``, both modes), or None where the graph has no such path.
    on_chip_axis: str | None
    # What the launcher needs, as plain data (the structure: ``codegen/launch.py``).
    launch: dict

    def launched(self, mode: str, direction: str, *, on_chip: bool = False) -> list[str]:
        """The kernels one forward or backward step runs in ``mode`` (train or eval)."""
        if on_chip:
            return [f"fused_{direction}"]
        if direction == "forward":
            return [name for name, _ in self.reduce_kernels[mode]] + ["forward"]
        return [name for name, _ in self.backward_reduce_kernels[mode]] + [f"backward_{mode}"]

    def kernel_text(self, name: str) -> str:
        """The source of kernel ``name``, from its ``def`` to the next kernel."""
        start = self.text.index(f"\ndef {name}(")
        end = self.text.find("\n@triton.jit", start)
        return self.text[start : end if end >= 0 else len(self.text)]

    def traffic(self, mode: str = "train", *, on_chip: bool = False) -> tuple[int, int]:
        """Full-size tensor elements moved per element of x by a forward and a backward step:
        the loads of x and dy and the stores of y and dx in the kernels generated, each
        executed once per element (the minimum: forward 2, backward 3)."""
        return tuple(  # type: ignore[return-value]
            sum(
                len(_FULL_SIZE_ACCESS.findall(self.kernel_text(k)))
                for k in self.launched(mode, direction, on_chip=on_chip)
            )
            for direction in ("forward", "backward")
        )


def _template(name: str) -> Template:
    return Template((resource_dir("kernels") / name).read_text())


def _indent(lines: list[str], spaces: int) -> str:
    return ("\n" + " " * spaces).join(lines)


def _node_code(graph: LayerGraph, index: int, statistic) -> list[str]:
    """``t<index> = ...``: an element-wise op from the registry's template, or the lines
    ``statistic(index)`` gives for a statistic."""
    node = graph.node(index)
    if node.axis is None:
        args = dict(zip("ab", (f"t{j}" for j in node.inputs), strict=False))
        return [f"t{index} = {ELEMENTWISE[node.op].triton.format(**args)}"]
    return statistic(index)


def _finish(graph: LayerGraph, index: int, moment: str) -> str:
    """A statistic from its moment: sqrt(moment + eps) for rms and std."""
    return f"tl.sqrt({moment} + eps)" if STATISTICS[graph.node(index).op].root else moment


def _loaded(graph: LayerGraph):
    """Statistics loaded from their moment arrays (computed by an earlier pass)."""

    def lines(index: int) -> list[str]:
        row = AXIS_KINDS[graph.node(index).axis].row
        moment = f"tl.load(m{index}_ptr + {row}, mask=mask, other=0.0).to(COMPUTE)"
        return [f"t{index} = {_finish(graph, index, moment)}"]

    return lines


def _on_chip(graph: LayerGraph):
    """Statistics reduced in registers from the tile of their input (single-kernel path)."""

    def lines(index: int) -> list[str]:
        node = graph.node(index)
        u, kind = node.inputs[0], AXIS_KINDS[node.axis]
        moment = MOMENTS[STATISTICS[node.op].moment]
        count = kind.tile_count
        masked = f"tl.where(mask, t{u}, 0.0)"
        out = [f"a{index} = {kind.tile_sum.format(v=masked)} / {count}"]
        if "{var}" in moment.from_mean_var:  # two passes over the tile in registers
            out += [
                f"d = tl.where(mask, t{u} - a{index}, 0.0)",
                f"v{index} = {kind.tile_sum.format(v='d * d')} / {count}",
            ]
        out.append(f"m{index} = {moment.from_mean_var.format(mean=f'a{index}', var=f'v{index}')}")
        return [*out, f"t{index} = {_finish(graph, index, f'm{index}')}"]

    return lines


def _body(graph: LayerGraph, indices: list[int], statistic) -> list[str]:
    return [line for i in indices for line in _node_code(graph, i, statistic)]


def _stage_label(plan: Schedule, p: ReductionPass) -> dict[str, str]:
    return {
        "stage": str(p.stage),
        "axes": ", ".join(p.axes),
        "statistics": ", ".join(f"{plan.graph.label(k)} (node {k})" for k in p.statistics),
    }


def _split_channel(graph: LayerGraph, statistics: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """(statistics reduced over blocks and merged later, per-position ones over channels)."""
    channel = [k for k in statistics if AXIS_KINDS[graph.node(k).axis].per_position]
    return [k for k in statistics if k not in channel], channel


def _reduce_kernel(plan: Schedule, p: ReductionPass, name: str, moment_params: str) -> str:
    graph = plan.graph
    blocked, channel = _split_channel(graph, p.statistics)
    block_inputs = sorted({graph.node(k).inputs[0] for k in blocked})
    channel_inputs = sorted({graph.node(k).inputs[0] for k in channel})
    cone = plan.cone(tuple(sorted({*block_inputs, *channel_inputs})))
    body = _body(graph, cone, _loaded(graph))
    accumulators, blocks = [], []
    if block_inputs:
        blocks.append("block = (n * C + c) * T + t")
    for position, u in enumerate(block_inputs):
        blocks += [
            f"e = tl.where(mask, t{u}, 0.0)  # input of the statistics of node {u}",
            # Sums shifted by the block's first value: exact for constant rows (whose
            # variance must be 0, not rounding noise), and more accurate elsewhere.
            "pivot = tl.sum(tl.where(s == t * BLOCK, e, 0.0), axis=0)",
            "pivot = tl.where(tl.abs(pivot) < float('inf'), pivot, 0.0)",
            "block_mean = pivot + tl.sum(tl.where(mask, e - pivot, 0.0), axis=0) / nb",
            "d = tl.where(mask, e - block_mean, 0.0)",
        ]
        for q, value in enumerate(("nb", "block_mean", "tl.sum(d * d, axis=0)")):
            blocks.append(f"tl.store(part_ptr + {3 * position + q} * N * C * T + block, {value})")
    for u in channel_inputs:
        accumulators += [
            f"cmean{u} = tl.zeros([BLOCK], COMPUTE)",
            f"cm2_{u} = tl.zeros([BLOCK], COMPUTE)",
        ]
        blocks += [
            f"delta = t{u} - cmean{u}  # Welford: node {u} over the channels",
            f"cmean{u} = cmean{u} + delta / (c + 1)",
            f"cm2_{u} = cm2_{u} + delta * (t{u} - cmean{u})",
        ]
    stores = []
    for k in channel:
        u = graph.node(k).inputs[0]
        moment = MOMENTS[STATISTICS[graph.node(k).op].moment]
        value = moment.from_mean_var.format(mean=f"cmean{u}", var=f"(cm2_{u} / C)")
        stores.append(f"tl.store(m{k}_ptr + n * S + s, {value}, mask=mask)")
        if moment.keeps_mean:  # the backward pass needs the mean it was taken around
            stores.append(f"tl.store(a{k}_ptr + n * S + s, cmean{u}, mask=mask)")
    return _template("reduce.py.tmpl").substitute(
        name=name,
        moment_params=moment_params,
        **_stage_label(plan, p),
        accumulators=_indent(accumulators, 4),
        body=_indent(body, 8),
        blocks=_indent(blocks, 8),
        stores=_indent(stores, 4),
    )


def unsupported(graph: LayerGraph) -> str | None:
    """Why the compiler cannot generate kernels for ``graph`` (a valid layer), or None."""
    for node in graph.canonical().nodes:
        op = ELEMENTWISE.get(node.op)
        if node.axis is None and not (op and op.triton and len(op.grad) == op.arity):
            return f"op {node.op!r} has no Triton expression or derivative rule in the registry"
    return None


def on_chip_axis(plan: Schedule) -> str | None:
    """The row kind of the single-kernel path for ``plan``: one stage whose statistics are
    all per-sample over instance, group or layer groups (group and layer not both: a layer
    tile would need segmented group sums), or None."""
    if len(plan.passes) != 1 or not set(plan.passes[0].axes) <= set(ON_CHIP_AXES):
        return None
    axes = plan.passes[0].axes
    if "group" in axes and "layer" in axes:
        return None
    return "layer" if "layer" in axes else "group" if "group" in axes else "instance"


def generate(graph: LayerGraph) -> LayerSource:
    """The kernels of a (valid) layer graph: for training and for eval mode, one
    reduction kernel per stage forward and backward, an element-wise backward kernel, the
    element-wise forward kernel (the same in both modes) and, for graphs of one stage of
    per-sample statistics, single-kernel forward and backward for groups that fit on chip."""
    reason = unsupported(graph)
    if reason:
        raise GraphError(f"cannot compile {graph.formula()}: {reason}")
    plans = {"train": schedule(graph, training=True), "eval": schedule(graph, training=False)}
    canonical = plans["train"].graph
    statistics = plans["train"].statistics
    moment_params = " ".join(f"m{k}_ptr, a{k}_ptr, d{k}_ptr," for k in statistics)
    parts = [(resource_dir("kernels") / "prelude.py").read_text()]
    forward_reduce: dict[str, tuple[tuple[str, ReductionPass], ...]] = {}
    for mode, plan in plans.items():
        kernels = []
        for p in plan.passes:
            name = f"reduce_{mode}_{p.stage}"
            parts.append(_reduce_kernel(plan, p, name, moment_params))
            kernels.append((name, p))
        forward_reduce[mode] = tuple(kernels)
    everything = list(range(NUM_INITIAL, NUM_INITIAL + len(canonical.nodes)))
    forward_body = _body(canonical, everything, _loaded(canonical))
    parts.append(
        _template("forward.py.tmpl").substitute(
            name="forward",
            moment_params=moment_params,
            body=_indent(forward_body, 4),
            output=f"t{canonical.output}",
        )
    )
    backward_reduce: dict[str, tuple[tuple[str, ReductionPass], ...]] = {}
    for mode, plan in plans.items():
        kernels = []
        for p in reversed(plan.passes):
            name = f"backward_{mode}_{p.stage}"
            parts.append(_backward_reduce_kernel(plan, p, name, moment_params, forward_body))
            kernels.append((name, p))
        backward_reduce[mode] = tuple(kernels)
        parts.append(_backward_kernel(plan, f"backward_{mode}", moment_params, forward_body))
    # Without batch statistics the two modes are one computation.
    batch = any(keeps_running(node.axis) for node in canonical.nodes)
    row = None if batch else on_chip_axis(plans["train"])
    if row:
        parts += _fused_kernels(plans["train"], row, moment_params)
    header = f"# Generated by evonorm-search for: {canonical.formula()}\n"
    text = re.sub(r"\n[ ]+\n", "\n", header + "".join(parts))  # lines left empty by the templates
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    launch = _launch_plan(plans, forward_reduce, backward_reduce, row)
    return LayerSource(
        text, digest, plans["train"], plans["eval"], forward_reduce, backward_reduce, row, launch
    )


def _launch_plan(
    plans: dict[str, Schedule],
    forward_reduce: dict[str, tuple[tuple[str, ReductionPass], ...]],
    backward_reduce: dict[str, tuple[tuple[str, ReductionPass], ...]],
    row: str | None,
) -> dict:
    """The launcher's plan (``codegen/launch.py`` describes it): per mode the statistics
    and reduction kernels, the single-kernel path's axis and the parameters read.  Built
    from the schedules' validated indices, the registry's moments and the generated kernel
    names: ints, bools and strings only."""

    def kernels(passes: tuple[tuple[str, ReductionPass], ...]) -> list[dict]:
        return [{"name": name, "statistics": [int(k) for k in p.statistics]} for name, p in passes]

    graph = plans["train"].graph
    launch: dict = {}
    for mode, plan in plans.items():
        statistics = []
        for k in plan.statistics:
            node = graph.node(k)
            stat = STATISTICS[node.op]
            statistics.append(
                {
                    "node": int(k),
                    "axis": str(node.axis),
                    "moment": stat.moment,
                    "input": int(node.inputs[0]),
                    "running": plan.from_running(k),
                    "unbiased": stat.running_unbiased,
                    "keeps_running": AXIS_KINDS[node.axis].running,
                    "per_position": AXIS_KINDS[node.axis].per_position,
                }
            )
        launch[mode] = {
            "statistics": statistics,
            "reduce": kernels(forward_reduce[mode]),
            "backward_reduce": kernels(backward_reduce[mode]),
        }
    read = {j for node in graph.nodes for j in node.inputs}
    launch["on_chip"] = row
    launch["reads"] = {"v0": 2 in read, "v1": 3 in read}  # the initial nodes x, 0, v0, v1
    return launch


def _sweep(
    plan: Schedule, targets: tuple[int, ...], *, on_chip: bool = False
) -> tuple[list[str], dict[int, str]]:
    """Reverse-mode code for one element: the adjoint ``g<i>`` of every node downstream of
    the statistics ``targets`` (all nodes when empty), from the output's adjoint ``g``.
    Statistics of later stages than the targets pass their adjoints ``dm<k>`` on to their
    inputs (loaded, or ``on_chip`` reduced over the tile); the others are leaves.  Returns
    the lines and each node's adjoint."""
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
        stat, kind = STATISTICS[node.op], AXIS_KINDS[node.axis]
        if on_chip:
            total = kind.tile_sum.format(v=f"tl.where(mask, g{i}, 0.0)")
            length, mean = kind.tile_count, f"a{i}"
        else:
            total = f"tl.load(d{i}_ptr + {kind.row}, mask=mask, other=0.0).to(COMPUTE)"
            length = kind.length
            mean = f"tl.load(a{i}_ptr + {kind.row}, mask=mask, other=0.0).to(COMPUTE)"
        lines.append(f"dm{i} = {total}" + (f" / (2.0 * t{i})" if stat.root else ""))
        u = node.inputs[0]
        term = MOMENTS[stat.moment].adjoint.format(dm=f"dm{i}", n=length, u=f"t{u}", mean=mean)
        contributions.setdefault(u, []).append(f"({term})")
    for j in (0, 2, 3):
        if j in contributions:
            lines.append(f"g{j} = {' + '.join(contributions[j])}")
            adjoint[j] = f"g{j}"
    return lines, adjoint


def _backward_reduce_kernel(
    plan: Schedule, p: ReductionPass, name: str, moment_params: str, forward: list[str]
) -> str:
    lines, adjoint = _sweep(plan, p.statistics)
    blocked, channel = _split_channel(plan.graph, p.statistics)
    accumulators = [f"acc{k} = tl.zeros([BLOCK], COMPUTE)" for k in channel]
    sums = ["block = (n * C + c) * T + t"] if blocked else []
    for position, k in enumerate(blocked):
        total = f"tl.sum(tl.where(mask, {adjoint.get(k, '0.0 * t0')}, 0.0), axis=0)"
        sums.append(f"tl.store(part_ptr + {position} * N * C * T + block, {total})")
    sums += [f"acc{k} += tl.where(mask, {adjoint.get(k, '0.0 * t0')}, 0.0)" for k in channel]
    stores = [f"tl.store(d{k}_ptr + n * S + s, acc{k}, mask=mask)" for k in channel]
    return _template("backward_reduce.py.tmpl").substitute(
        name=name,
        moment_params=moment_params,
        **_stage_label(plan, p),
        accumulators=_indent(accumulators, 4),
        forward=_indent(forward, 8),
        backward=_indent(lines, 8),
        sums=_indent(sums, 8),
        stores=_indent(stores, 4),
    )


def _backward_kernel(plan: Schedule, name: str, moment_params: str, forward: list[str]) -> str:
    lines, adjoint = _sweep(plan, ())
    zero = "tl.zeros([BLOCK], COMPUTE)"
    return _template("backward.py.tmpl").substitute(
        name=name,
        moment_params=moment_params,
        forward=_indent(forward, 8),
        backward=_indent(lines, 8),
        dx=adjoint.get(0, zero),
        dv0=adjoint.get(2, zero),
        dv1=adjoint.get(3, zero),
        output=plan.graph.output,
    )


def _fused_kernels(plan: Schedule, row: str, moment_params: str) -> list[str]:
    graph = plan.graph
    everything = list(range(NUM_INITIAL, NUM_INITIAL + len(graph.nodes)))
    body = _body(graph, everything, _on_chip(graph))
    stores = []
    for k in plan.statistics:
        kind = AXIS_KINDS[graph.node(k).axis]
        row, mask = kind.tile_row, ", mask=row_mask" if kind.tile_per_channel else ""
        stores.append(f"tl.store(m{k}_ptr + {row}, m{k}{mask})")
        if MOMENTS[STATISTICS[graph.node(k).op].moment].keeps_mean:
            stores.append(f"tl.store(a{k}_ptr + {row}, a{k}{mask})")
    forward = _template("fused_forward.py.tmpl").substitute(
        name="fused_forward",
        moment_params=moment_params,
        row=row,
        body=_indent(body, 4),
        output=f"t{graph.output}",
        stores=_indent(stores, 4),
    )
    lines, adjoint = _sweep(plan, (), on_chip=True)
    zero = "tl.zeros([CBLOCK, SBLOCK], COMPUTE)"
    backward = _template("fused_backward.py.tmpl").substitute(
        name="fused_backward",
        moment_params=moment_params,
        forward=_indent(body, 4),
        backward=_indent(lines, 4),
        dx=adjoint.get(0, zero),
        dv0=adjoint.get(2, zero),
        dv1=adjoint.get(3, zero),
        output=graph.output,
    )
    return [forward, backward]
