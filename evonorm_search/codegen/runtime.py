"""Loading generated kernels and launching them: a layer's forward and backward steps.

Generated source is written to a cache directory as a real ``.py`` file named by its
content hash (triton reads a kernel's source file; the interpreter needs one too), with an
atomic rename so that concurrent processes never see half a file.  Triton's own cache keeps
the compiled binaries.  The launcher picks block sizes (powers of two, masked) for the
shape at hand, and the single-kernel path where a graph has one and its groups fit on chip.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from evonorm_search.codegen.source import LayerSource
from evonorm_search.ops import STATISTICS, reduce_count

__all__ = [
    "backward",
    "cache_dir",
    "forward",
    "load_module",
    "on_chip_tile",
    "statistic_rows",
    "write_source",
]

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


def cache_dir() -> Path:
    """``$EVONORM_KERNEL_CACHE``, else ``~/.cache/evonorm-search/kernels``."""
    default = Path.home() / ".cache" / "evonorm-search" / "kernels"
    return Path(os.environ.get("EVONORM_KERNEL_CACHE") or default)


def write_source(source: LayerSource, directory: Path) -> Path:
    """``directory/evonorm_kernels_<digest>.py``, written unless it holds the text already
    (atomically: a concurrent reader sees the old file or the new one, never half)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"evonorm_kernels_{source.digest}.py"
    if not path.is_file() or path.read_text() != source.text:
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
            f.write(source.text)
        os.replace(f.name, path)
    return path


def load_module(source: LayerSource) -> ModuleType:
    """The generated module, written once to the cache and imported (memoised per
    process by content hash)."""
    name = f"evonorm_kernels_{source.digest}"
    if name in sys.modules:
        return sys.modules[name]
    path = write_source(source, cache_dir())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def statistic_rows(axis: str, n: int, c: int, s: int, groups: int) -> int:
    """How many statistics (reduction groups) of ``axis`` an x of (n, c, s) has."""
    return {"instance": n * c, "group": n * groups, "layer": n, "batch": c, "channel": n * s}[axis]


def stage_block(s: int) -> tuple[int, int]:
    """(BLOCK, T): a stage pass covers S positions in T blocks of BLOCK lanes."""
    block = min(MAX_BLOCK, _pow2(s))
    return block, math.ceil(s / block)


@dataclass(frozen=True)
class ChannelLaunch:
    """The element-wise backward pass on x (n, c, s): ``c`` x ``split`` programs, each
    covering ``chunk`` of a channel's ``length`` = n*s elements in blocks of ``block``."""

    length: int
    block: int
    split: int
    chunk: int


def channel_launch(n: int, c: int, s: int) -> ChannelLaunch:
    length = n * s
    block = min(MAX_BLOCK, _pow2(length))
    split = max(1, min(MAX_SPLIT, _pow2(TARGET_PROGRAMS // max(c, 1)),
                       _pow2(math.ceil(length / block))))  # fmt: skip
    chunk = math.ceil(math.ceil(length / split) / block) * block
    return ChannelLaunch(length, block, split, chunk)


def forward_block(total: int) -> int:
    return min(MAX_BLOCK, _pow2(total))


@dataclass(frozen=True)
class Tile:
    """The single-kernel path's program: ``row_channels`` channels of one sample held as a
    (cblock, sblock) tile, with ``num_warps`` warps."""

    row_channels: int
    cblock: int
    sblock: int
    num_warps: int


def on_chip_tile(source: LayerSource, shape: tuple[int, ...], groups: int,
                 dtype: torch.dtype) -> Tile | None:  # fmt: skip
    """The single-kernel path's tile for x of ``shape``, or None where the graph has no
    such path or its reduction groups do not fit on chip."""
    if source.on_chip_axis is None:
        return None
    c, s = shape[1], math.prod(shape[2:])
    row_channels = {"instance": 1, "group": c // groups, "layer": c}[source.on_chip_axis]
    cblock, sblock = _pow2(row_channels), _pow2(s)
    limit = ON_CHIP_ELEMENTS // (2 if dtype == torch.float64 else 1)
    if cblock * sblock > limit:
        return None
    return Tile(row_channels, cblock, sblock, min(16, max(4, cblock * sblock // 512)))


def _block_rows(values: Tensor, axis: str, groups: int) -> Tensor:
    """Per-block values (N, C, T) arranged as (statistics of ``axis``, blocks of each)."""
    n, c, t = values.shape
    if axis == "batch":
        return values.transpose(0, 1).reshape(c, n * t)
    per = {"instance": 1, "group": c // groups, "layer": c}[axis]
    return values.reshape(n * c // per, per * t)


def _merge(count: Tensor, mean: Tensor, m2: Tensor) -> tuple[Tensor, Tensor]:
    """Chan's merge of each row's blocks (count, mean, M2) into (mean, biased variance),
    shifted by the first block's mean: exact for constant rows."""
    pivot = mean[:, :1]
    pivot = torch.where(pivot.isfinite(), pivot, torch.zeros_like(pivot))
    total = count.sum(1)
    grand = pivot[:, 0] + (count * (mean - pivot)).sum(1) / total
    m2 = m2.sum(1) + (count * (mean - grand[:, None]).square()).sum(1)
    return grand, m2 / total


def _compute(x: Tensor) -> tuple[torch.dtype, object]:
    import triton.language as tl

    if x.dtype == torch.float64:
        return torch.float64, tl.float64
    return torch.float32, tl.float32


def forward(
    source: LayerSource, x: Tensor, v0: Tensor, v1: Tensor, weight: Tensor | None,
    bias: Tensor | None, *, groups: int, eps: float, training: bool, momentum: float,
    running: dict[int, Tensor],
) -> tuple[Tensor, dict[int, Tensor], dict[int, Tensor]]:  # fmt: skip
    """The layer's output for ``x`` (N, C, *spatial), the moment of every statistic node
    and the mean its input had; updates ``running`` (node -> (C,) running estimate) in
    training mode."""
    module = load_module(source)
    plan = source.training if training else source.eval
    compute, tl_compute = _compute(x)
    shape = x.shape
    x = x.contiguous()
    n, c = shape[0], shape[1]
    s = math.prod(shape[2:])
    cg = c // groups
    moments: dict[int, Tensor] = {}
    for k in plan.statistics:
        if plan.from_running(k):
            moments[k] = running[k].to(compute)
        else:
            rows = statistic_rows(plan.graph.node(k).axis, n, c, s, groups)
            moments[k] = torch.empty(rows, dtype=compute, device=x.device)
    means = {k: torch.empty_like(m) for k, m in moments.items()}
    triples = _triples(plan, moments, means, moments)  # no adjoints in the forward pass
    y = torch.empty_like(x)
    w = weight if weight is not None else v0  # unread when AFFINE is off
    b = bias if bias is not None else v0
    tile = on_chip_tile(source, shape, groups, x.dtype)
    if tile:
        module.fused_forward[(n, c // tile.row_channels)](
            x, v0, v1, w, b, y, *triples, c, s, cg, tile.row_channels, eps,
            COMPUTE=tl_compute, AFFINE=weight is not None, CBLOCK=tile.cblock,
            SBLOCK=tile.sblock, num_warps=tile.num_warps, **OPTIONS,
        )  # fmt: skip
        return y.view(shape), moments, means
    block, t = stage_block(s)
    for kernel_name, p in source.reduce_kernels["train" if training else "eval"]:
        graph = plan.graph
        inputs = sorted({graph.node(k).inputs[0] for k in p.statistics
                         if graph.node(k).axis != "channel"})  # fmt: skip
        partials = torch.empty((max(len(inputs), 1), 3, n, c, t), dtype=compute,
                               device=x.device)  # fmt: skip
        getattr(module, kernel_name)[(n, t)](
            x, v0, v1, *triples, partials, n, c, s, cg, t, eps, COMPUTE=tl_compute, BLOCK=block,
            **OPTIONS,
        )  # fmt: skip
        for k in p.statistics:
            node = graph.node(k)
            if node.axis == "channel":
                continue  # stored by the kernel
            blocks = partials[inputs.index(node.inputs[0])]
            mean, var = _merge(*(_block_rows(blocks[q], node.axis, groups) for q in range(3)))
            moment = STATISTICS[node.op].moment
            moments[k].copy_({"mean": mean, "var": var, "meansq": var + mean * mean}[moment])
            means[k].copy_(mean)
    if training:
        count = reduce_count((n, c, s), "batch", groups)
        for k, buffer in running.items():
            stat = STATISTICS[plan.graph.node(k).op]
            estimate = moments[k] * (count / (count - 1)) if stat.running_unbiased else moments[k]
            buffer.mul_(1 - momentum).add_(estimate.to(buffer.dtype), alpha=momentum)
    total = x.numel()
    block = forward_block(total)
    module.forward[(math.ceil(total / block),)](
        x, v0, v1, w, b, y, *triples, total, c, s, cg, eps,
        COMPUTE=tl_compute, AFFINE=weight is not None, BLOCK=block, **OPTIONS,
    )  # fmt: skip
    return y.view(shape), moments, means


def _triples(plan, moments, means, adjoints) -> list[Tensor]:
    """The kernels' per-statistic arguments: moment, mean of its input, adjoint."""
    return [t for k in plan.statistics for t in (moments[k], means[k], adjoints[k])]


def backward(
    source: LayerSource, dy: Tensor, x: Tensor, v0: Tensor, v1: Tensor, weight: Tensor | None,
    moments: dict[int, Tensor], means: dict[int, Tensor], *, groups: int, eps: float,
    training: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Gradients (dx, dv0, dv1, dweight, dbias) from the upstream gradient ``dy`` and what
    the forward pass saved: x and the statistics' moments and means."""
    module = load_module(source)
    mode = "train" if training else "eval"
    plan = source.training if training else source.eval
    compute, tl_compute = _compute(x)
    shape = x.shape
    x, dy = x.contiguous(), dy.contiguous()
    n, c, s = shape[0], shape[1], math.prod(shape[2:])
    cg = c // groups
    adjoints = {k: torch.zeros_like(m) for k, m in moments.items()}
    triples = _triples(plan, moments, means, adjoints)
    w = weight if weight is not None else v0  # unread when AFFINE is off
    dx = torch.empty_like(x)
    tile = on_chip_tile(source, shape, groups, x.dtype)
    if tile:
        partials = torch.empty((4, n, c), dtype=compute, device=x.device)
        module.fused_backward[(n, c // tile.row_channels)](
            x, v0, v1, w, dy, dx, *triples, partials, n, c, s, cg, tile.row_channels, eps,
            COMPUTE=tl_compute, AFFINE=weight is not None, CBLOCK=tile.cblock,
            SBLOCK=tile.sblock, num_warps=tile.num_warps, **OPTIONS,
        )  # fmt: skip
        dv0, dv1, dweight, dbias = partials.sum(1)  # deterministic
        return dx.view(shape), dv0, dv1, dweight, dbias
    block, t = stage_block(s)
    for kernel_name, p in source.backward_reduce_kernels[mode]:
        blocked = [k for k in p.statistics if plan.graph.node(k).axis != "channel"]
        partials = torch.empty((max(len(blocked), 1), n, c, t), dtype=compute, device=x.device)
        getattr(module, kernel_name)[(n, t)](
            x, v0, v1, w, dy, *triples, partials, n, c, s, cg, t, eps, COMPUTE=tl_compute,
            AFFINE=weight is not None, BLOCK=block, **OPTIONS,
        )  # fmt: skip
        for position, k in enumerate(blocked):  # channel adjoints: stored by the kernel
            axis = plan.graph.node(k).axis
            adjoints[k].copy_(_block_rows(partials[position], axis, groups).sum(1))
    launch = channel_launch(n, c, s)
    partials = torch.empty(4 * c * launch.split, dtype=compute, device=x.device)
    getattr(module, f"backward_{mode}")[(c, launch.split)](
        x, v0, v1, w, dy, dx, *triples, partials, n, c, s, cg, launch.length, launch.chunk,
        eps, COMPUTE=tl_compute, AFFINE=weight is not None, BLOCK=launch.block,
        SPLIT=launch.split, **OPTIONS,
    )  # fmt: skip
    dv0, dv1, dweight, dbias = partials.view(4, c, launch.split).sum(-1)
    return dx.view(shape), dv0, dv1, dweight, dbias
