"""Loading generated kernels and launching them: the forward pass of a layer.

Generated source is written to a cache directory as a real ``.py`` file named by its
content hash (triton reads a kernel's source file; the interpreter needs one too), with an
atomic rename so that concurrent processes never see half a file.  Triton's own cache keeps
the compiled binaries.
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

from evonorm_search.codegen.source import MOMENT_KIND, LayerSource
from evonorm_search.ops import STATISTICS, reduce_count

__all__ = ["backward", "cache_dir", "forward", "load_module"]

MAX_BLOCK = 1024
# Batch statistics reduce N*S elements per channel: with few channels one program per
# channel would idle most of a GPU, so their rows split into up to this many programs.
MAX_SPLIT = 64
TARGET_PROGRAMS = 512


def cache_dir() -> Path:
    """``$EVONORM_KERNEL_CACHE``, else ``~/.cache/evonorm-search/kernels``."""
    default = Path.home() / ".cache" / "evonorm-search" / "kernels"
    return Path(os.environ.get("EVONORM_KERNEL_CACHE") or default)


def load_module(source: LayerSource) -> ModuleType:
    """The generated module, written once to the cache and imported (memoised per
    process by content hash)."""
    name = f"evonorm_kernels_{source.digest}"
    if name in sys.modules:
        return sys.modules[name]
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    if not path.is_file() or path.read_text() != source.text:
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
            f.write(source.text)
        os.replace(f.name, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _geometry(axis: str, n: int, c: int, s: int, groups: int) -> tuple[int, int]:
    """(rows, elements per row) of the reduction groups of ``axis`` on x (n, c, s)."""
    return {
        "instance": (n * c, s),
        "group": (n * groups, c // groups * s),
        "layer": (n, c * s),
        "batch": (c, n * s),
        "channel": (n * s, c),
    }[axis]


@dataclass(frozen=True)
class PassLaunch:
    """How a reduction pass is launched on x (n, c, s): ``rows`` x ``split`` programs,
    each reducing ``chunk`` of a row's ``length`` elements in blocks of ``block``."""

    rows: int
    length: int
    block: int
    split: int
    chunk: int


def pass_launch(axis: str, n: int, c: int, s: int, groups: int) -> PassLaunch:
    rows, length = _geometry(axis, n, c, s, groups)
    block = min(MAX_BLOCK, _pow2(length))
    split = 1
    if axis == "batch":
        split = max(1, min(MAX_SPLIT, _pow2(TARGET_PROGRAMS // max(rows, 1)),
                           _pow2(math.ceil(length / block))))  # fmt: skip
    chunk = math.ceil(math.ceil(length / split) / block) * block
    return PassLaunch(rows, length, block, split, chunk)


def forward_block(total: int) -> int:
    return min(MAX_BLOCK, _pow2(total))


def forward(
    source: LayerSource, x: Tensor, v0: Tensor, v1: Tensor, weight: Tensor | None,
    bias: Tensor | None, *, groups: int, eps: float, training: bool, momentum: float,
    running: dict[int, Tensor],
) -> tuple[Tensor, dict[int, Tensor]]:  # fmt: skip
    """The layer's output for ``x`` (N, C, *spatial) and the moment of every statistic
    node; updates ``running`` (node -> (C,) running estimate) in training mode."""
    import triton.language as tl

    module = load_module(source)
    plan = source.training if training else source.eval
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    tl_compute = tl.float64 if compute == torch.float64 else tl.float32
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
            rows, _ = _geometry(plan.graph.node(k).axis, n, c, s, groups)
            moments[k] = torch.empty(rows, dtype=compute, device=x.device)
    means = {k: torch.empty_like(m) for k, m in moments.items()}
    triples = _triples(plan, moments, means, moments)  # no adjoints in the forward pass
    for kernel_name, p in source.reduce_kernels["train" if training else "eval"]:
        launch = pass_launch(p.axis, n, c, s, groups)
        rows, split = launch.rows, launch.split
        sources = sorted({plan.graph.node(k).inputs[0] for k in p.statistics})
        partials = torch.empty(3 * len(sources) * rows * split if split > 1 else 1,
                               dtype=compute, device=x.device)  # fmt: skip
        getattr(module, kernel_name)[(rows, split)](
            x, v0, v1, *triples, partials, c, s, cg, rows, launch.length, launch.chunk, eps,
            COMPUTE=tl_compute, BLOCK=launch.block, SPLIT=split,
        )  # fmt: skip
        if split > 1:
            for k in p.statistics:
                position = sources.index(plan.graph.node(k).inputs[0])
                part = partials[3 * position * rows * split : 3 * (position + 1) * rows * split]
                moment = STATISTICS[plan.graph.node(k).op].moment
                module._merge_partials[(rows,)](part, moments[k], rows, KIND=MOMENT_KIND[moment],
                                                COMPUTE=tl_compute, SPLIT=split)  # fmt: skip
                if moment == "var":
                    module._merge_partials[(rows,)](part, means[k], rows, KIND=0,
                                                    COMPUTE=tl_compute, SPLIT=split)  # fmt: skip
    if training:
        count = reduce_count((n, c, s), "batch", groups)
        for k, buffer in running.items():
            stat = STATISTICS[plan.graph.node(k).op]
            estimate = moments[k] * (count / (count - 1)) if stat.running_unbiased else moments[k]
            buffer.mul_(1 - momentum).add_(estimate.to(buffer.dtype), alpha=momentum)
    y = torch.empty_like(x)
    total = x.numel()
    block = forward_block(total)
    w = weight if weight is not None else v0  # unread when AFFINE is off
    module.forward[(math.ceil(total / block),)](
        x, v0, v1, w, bias if bias is not None else v0, y, *triples, total, c, s, cg, eps,
        COMPUTE=tl_compute, AFFINE=weight is not None, BLOCK=block,
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
    import triton.language as tl

    module = load_module(source)
    mode = "train" if training else "eval"
    plan = source.training if training else source.eval
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    tl_compute = tl.float64 if compute == torch.float64 else tl.float32
    shape = x.shape
    x, dy = x.contiguous(), dy.contiguous()
    n, c, s = shape[0], shape[1], math.prod(shape[2:])
    cg = c // groups
    adjoints = {k: torch.zeros_like(m) for k, m in moments.items()}
    triples = _triples(plan, moments, means, adjoints)
    w = weight if weight is not None else v0  # unread when AFFINE is off
    for kernel_name, p in source.backward_reduce_kernels[mode]:
        launch = pass_launch(p.axis, n, c, s, groups)
        rows, split = launch.rows, launch.split
        partials = torch.empty(len(p.statistics) * rows * split, dtype=compute, device=x.device)
        getattr(module, kernel_name)[(rows, split)](
            x, v0, v1, w, dy, *triples, partials, n, c, s, cg, rows, launch.length,
            launch.chunk, eps, COMPUTE=tl_compute, AFFINE=weight is not None,
            BLOCK=launch.block, SPLIT=split,
        )  # fmt: skip
        sums = partials.view(len(p.statistics), rows, split).sum(-1)  # deterministic
        for position, k in enumerate(p.statistics):
            adjoints[k].copy_(sums[position])
    launch = pass_launch("batch", n, c, s, groups)
    dx = torch.empty_like(x)
    partials = torch.empty(4 * c * launch.split, dtype=compute, device=x.device)
    getattr(module, f"backward_{mode}")[(c, launch.split)](
        x, v0, v1, w, dy, dx, *triples, partials, n, c, s, cg, launch.length, launch.chunk,
        eps, COMPUTE=tl_compute, AFFINE=weight is not None, BLOCK=launch.block,
        SPLIT=launch.split,
    )  # fmt: skip
    dv0, dv1, dweight, dbias = partials.view(4, c, launch.split).sum(-1)
    return dx.view(shape), dv0, dv1, dweight, dbias
