"""Launching a layer's generated kernels (``customop`` wraps them in ``torch.library`` ops).

Standalone: this module imports only math, typing, torch and the eager runtime (and triton
when a launch or ``interpreting`` needs it), nothing else of evonorm_search, so that an
exported layer can carry its text verbatim, after eager.py's, beside the generated
kernels.  What it knows of a layer comes from two
arguments: ``module``, the loaded kernel module, and ``plan``, plain data (str, int, bool,
None, lists and dicts with str keys, so ``repr`` writes it as a Python literal) that
``codegen.source.generate`` builds from the layer's schedules as ``LayerSource.launch``:

    {"train": MODE, "eval": MODE,
     "on_chip": "instance" | "group" | "layer" | None,  # the single-kernel path's groups
     "reads": {"v0": bool, "v1": bool}}                  # which parameters the graph reads
    MODE = {
        "statistics": [STATISTIC, ...],   # every statistic node, ascending: kernel arguments
        "reduce": [KERNEL, ...],          # forward reduction passes, in the order they run
        "backward_reduce": [KERNEL, ...]  # backward ones, latest stage first
    }
    STATISTIC = {"node": int, "axis": str, "moment": "mean" | "var" | "meansq",
                 "input": int,       # the node it reduces
                 "running": bool,    # read from its running estimate (eval-mode batch)
                 "unbiased": bool,   # its running estimate takes the variance's n / (n - 1)
                 "keeps_running": bool,  # its axis keeps a running estimate (batch)
                 "per_position": bool}   # reduced and stored by the element-wise pass
    KERNEL = {"name": str, "statistics": [int, ...]}

The element-wise kernels are ``forward`` and ``backward_<mode>``, and the single-kernel
path's ``fused_forward`` and ``fused_backward``.  The launcher picks block sizes (powers of
two, masked) for the shape at hand, and the single-kernel path where the plan has one and
its groups fit on chip.
"""

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from evonorm_search.eager import (
    block_rows,
    moment_of,
    row_channels,
    statistic_rows,
    update_running,
)

MAX_BLOCK = 1024
# The element-wise backward pass reduces per-channel gradients over N*S elements: with few
# channels one program per channel would idle most of a GPU, so rows split into up to this
# many programs.
MAX_SPLIT = 64
TARGET_PROGRAMS = 512
# Elements of the (channels, positions) tile one program of the single-kernel path holds in
# registers, for 16- and 32-bit inputs (computed in float32; half as many for float64).
ON_CHIP_ELEMENTS = 8192
# Compile options of every launch, explicit so that ahead-of-time compilation matches
# (floating-point contraction into FMAs: triton's default, about to change).
OPTIONS = {"enable_fp_fusion": True}
# Kernels index with 32-bit offsets.
MAX_ELEMENTS = 2**31 - 1


_INTERPRETING: list[bool] = []  # triton's answer, once asked


def interpreting() -> bool:
    """Whether triton runs kernels in its interpreter (on CPU tensors): ``TRITON_INTERPRET``
    as triton itself reads it, asked once per process (triton reads it when it defines a
    kernel).  Imports triton; False where it is not installed.  Once asked, torch.compile
    reads the answer as a constant (ask before tracing: importing triton breaks a graph)."""
    if not _INTERPRETING:
        _INTERPRETING.append(_ask_triton())
    return _INTERPRETING[0]


def _ask_triton() -> bool:
    try:
        import triton
    except ImportError:
        return False
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:  # triton 3.4 and later
        return bool(knobs.runtime.interpret)

    # Earlier versions read the variable when a kernel is defined: define one.
    @triton.jit
    def probe():
        pass

    return type(probe).__name__ == "InterpretedFunction"


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def stage_block(s: int) -> tuple[int, int]:
    """(BLOCK, T): a stage pass covers S positions in T blocks of BLOCK lanes."""
    block = min(MAX_BLOCK, _pow2(s))
    return block, math.ceil(s / block)


class ChannelLaunch(NamedTuple):
    """The element-wise backward pass on x (n, c, s): ``c`` x ``split`` programs, each
    covering ``chunk`` of a channel's ``length`` = n*s elements in blocks of ``block``."""

    length: int
    block: int
    split: int
    chunk: int


def channel_launch(n: int, c: int, s: int) -> ChannelLaunch:
    length = n * s
    block = min(MAX_BLOCK, _pow2(length))
    split = max(
        1, min(MAX_SPLIT, _pow2(TARGET_PROGRAMS // max(c, 1)), _pow2(math.ceil(length / block)))
    )
    chunk = math.ceil(math.ceil(length / split) / block) * block
    return ChannelLaunch(length, block, split, chunk)


def forward_block(total: int) -> int:
    return min(MAX_BLOCK, _pow2(total))


class Tile(NamedTuple):
    """The single-kernel path's program: ``row_channels`` channels of one sample held as a
    (cblock, sblock) tile, with ``num_warps`` warps."""

    row_channels: int
    cblock: int
    sblock: int
    num_warps: int


def on_chip_tile(
    plan: dict, shape: tuple[int, ...], groups: int, dtype: torch.dtype
) -> Tile | None:
    """The single-kernel path's tile for x of ``shape``, or None where the plan has no
    such path or its reduction groups do not fit on chip."""
    if plan["on_chip"] is None:
        return None
    c, s = shape[1], math.prod(shape[2:])
    channels = row_channels(plan["on_chip"], c, groups)
    cblock, sblock = _pow2(channels), _pow2(s)
    limit = ON_CHIP_ELEMENTS // (2 if dtype == torch.float64 else 1)
    if cblock * sblock > limit:
        return None
    return Tile(channels, cblock, sblock, min(16, max(4, cblock * sblock // 512)))


def _merge(count: Tensor, mean: Tensor, m2: Tensor) -> tuple[Tensor, Tensor]:
    """Chan's merge of each row's blocks (count, mean, M2) into (mean, biased variance),
    shifted by the first block's mean: exact for constant rows."""
    pivot = mean[:, :1]
    pivot = torch.where(pivot.isfinite(), pivot, torch.zeros_like(pivot))
    total = count.sum(1)
    grand = pivot[:, 0] + (count * (mean - pivot)).sum(1) / total
    m2 = m2.sum(1) + (count * (mean - grand[:, None]).square()).sum(1)
    return grand, m2 / total


def _compute(x: Tensor) -> tuple[torch.dtype, Any]:
    import triton.language as tl

    if x.dtype == torch.float64:
        return torch.float64, tl.float64
    return torch.float32, tl.float32


def compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def plan_statistics(plan: dict, training: bool) -> dict[int, dict]:
    """The mode's statistics by node, in argument order."""
    return {stat["node"]: stat for stat in plan["train" if training else "eval"]["statistics"]}


def _triples(statistics: dict[int, dict], moments, means, adjoints) -> list[Tensor]:
    """The kernels' per-statistic arguments: moment, mean of its input, adjoint."""
    return [t for k in statistics for t in (moments[k], means[k], adjoints[k])]


def forward(
    module: Any,
    plan: dict,
    x: Tensor,
    v0: Tensor,
    v1: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    groups: int,
    eps: float,
    training: bool,
    momentum: float,
    running: dict[int, Tensor],
) -> tuple[Tensor, dict[int, Tensor], dict[int, Tensor]]:
    """The layer's output for ``x`` (N, C, *spatial), the moment of every statistic node
    and the mean its input had; updates ``running`` (node -> (C,) running estimate) in
    training mode."""
    mode = "train" if training else "eval"
    statistics = plan_statistics(plan, training)
    compute, tl_compute = _compute(x)
    shape = x.shape
    x = x.contiguous()
    n, c = shape[0], shape[1]
    s = math.prod(shape[2:])
    cg = c // groups
    moments: dict[int, Tensor] = {}
    for k, stat in statistics.items():
        if stat["running"]:
            moments[k] = running[k].to(compute)
        else:
            rows = statistic_rows(stat["axis"], n, c, s, groups)
            moments[k] = torch.empty(rows, dtype=compute, device=x.device)
    means = {k: torch.empty_like(m) for k, m in moments.items()}
    triples = _triples(statistics, moments, means, moments)  # no adjoints in the forward pass
    y = torch.empty_like(x)
    w = weight if weight is not None else v0  # unread when AFFINE is off
    b = bias if bias is not None else v0
    tile = on_chip_tile(plan, shape, groups, x.dtype)
    if tile:
        module.fused_forward[(n, c // tile.row_channels)](
            x,
            v0,
            v1,
            w,
            b,
            y,
            *triples,
            c,
            s,
            cg,
            tile.row_channels,
            eps,
            COMPUTE=tl_compute,
            AFFINE=weight is not None,
            CBLOCK=tile.cblock,
            SBLOCK=tile.sblock,
            num_warps=tile.num_warps,
            **OPTIONS,
        )
        return y.view(shape), moments, means
    block, t = stage_block(s)
    for kernel in plan[mode]["reduce"]:
        inputs = sorted(
            {
                statistics[k]["input"]
                for k in kernel["statistics"]
                if not statistics[k]["per_position"]
            }
        )
        partials = torch.empty((max(len(inputs), 1), 3, n, c, t), dtype=compute, device=x.device)
        getattr(module, kernel["name"])[(n, t)](
            x,
            v0,
            v1,
            *triples,
            partials,
            n,
            c,
            s,
            cg,
            t,
            eps,
            COMPUTE=tl_compute,
            BLOCK=block,
            **OPTIONS,
        )
        for k in kernel["statistics"]:
            stat = statistics[k]
            if stat["per_position"]:
                continue  # stored by the kernel
            blocks = partials[inputs.index(stat["input"])]
            mean, var = _merge(*(block_rows(blocks[q], stat["axis"], groups) for q in range(3)))
            moments[k].copy_(moment_of(stat["moment"], mean, var))
            means[k].copy_(mean)
    if training:
        count = n * s  # the elements each batch statistic reduces
        for k, buffer in running.items():
            update_running(buffer, moments[k], count, statistics[k]["unbiased"], momentum)
    total = x.numel()
    block = forward_block(total)
    module.forward[(math.ceil(total / block),)](
        x,
        v0,
        v1,
        w,
        b,
        y,
        *triples,
        total,
        c,
        s,
        cg,
        eps,
        COMPUTE=tl_compute,
        AFFINE=weight is not None,
        BLOCK=block,
        **OPTIONS,
    )
    return y.view(shape), moments, means


def backward(
    module: Any,
    plan: dict,
    dy: Tensor,
    x: Tensor,
    v0: Tensor,
    v1: Tensor,
    weight: Tensor | None,
    moments: dict[int, Tensor],
    means: dict[int, Tensor],
    *,
    groups: int,
    eps: float,
    training: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (dx, dv0, dv1, dweight, dbias) from the upstream gradient ``dy`` and what
    the forward pass saved: x and the statistics' moments and means."""
    mode = "train" if training else "eval"
    statistics = plan_statistics(plan, training)
    compute, tl_compute = _compute(x)
    shape = x.shape
    x, dy = x.contiguous(), dy.contiguous()
    n, c, s = shape[0], shape[1], math.prod(shape[2:])
    cg = c // groups
    adjoints = {k: torch.zeros_like(m) for k, m in moments.items()}
    triples = _triples(statistics, moments, means, adjoints)
    w = weight if weight is not None else v0  # unread when AFFINE is off
    dx = torch.empty_like(x)
    tile = on_chip_tile(plan, shape, groups, x.dtype)
    if tile:
        partials = torch.empty((4, n, c), dtype=compute, device=x.device)
        module.fused_backward[(n, c // tile.row_channels)](
            x,
            v0,
            v1,
            w,
            dy,
            dx,
            *triples,
            partials,
            n,
            c,
            s,
            cg,
            tile.row_channels,
            eps,
            COMPUTE=tl_compute,
            AFFINE=weight is not None,
            CBLOCK=tile.cblock,
            SBLOCK=tile.sblock,
            num_warps=tile.num_warps,
            **OPTIONS,
        )
        dv0, dv1, dweight, dbias = partials.sum(1)  # deterministic
        return dx.view(shape), dv0, dv1, dweight, dbias
    block, t = stage_block(s)
    for kernel in plan[mode]["backward_reduce"]:
        blocked = [k for k in kernel["statistics"] if not statistics[k]["per_position"]]
        partials = torch.empty((max(len(blocked), 1), n, c, t), dtype=compute, device=x.device)
        getattr(module, kernel["name"])[(n, t)](
            x,
            v0,
            v1,
            w,
            dy,
            *triples,
            partials,
            n,
            c,
            s,
            cg,
            t,
            eps,
            COMPUTE=tl_compute,
            AFFINE=weight is not None,
            BLOCK=block,
            **OPTIONS,
        )
        for position, k in enumerate(blocked):  # channel adjoints: stored by the kernel
            axis = statistics[k]["axis"]
            adjoints[k].copy_(block_rows(partials[position], axis, groups).sum(1))
    launch = channel_launch(n, c, s)
    partials = torch.empty(4 * c * launch.split, dtype=compute, device=x.device)
    getattr(module, f"backward_{mode}")[(c, launch.split)](
        x,
        v0,
        v1,
        w,
        dy,
        dx,
        *triples,
        partials,
        n,
        c,
        s,
        cg,
        launch.length,
        launch.chunk,
        eps,
        COMPUTE=tl_compute,
        AFFINE=weight is not None,
        BLOCK=launch.block,
        SPLIT=launch.split,
        **OPTIONS,
    )
    dv0, dv1, dweight, dbias = partials.view(4, c, launch.split).sum(-1)
    return dx.view(shape), dv0, dv1, dweight, dbias
