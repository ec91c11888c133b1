"""The generated kernels as a PyTorch operator: ``torch.library`` custom ops with fake
(meta) implementations and an autograd formula, so that the fused layer trains under
autograd and traces under ``torch.compile`` like any built-in op.

Two ops, keyed by the canonical graph's JSON (generation is memoised per graph):
``evonorm_search::fused_forward`` returns the output, what backward needs (the
statistics' moments and the means their variances were taken around; x is saved by the
autograd formula) and the updated running estimates (an op with an autograd formula must
be functional: the caller copies them into its buffers);
``evonorm_search::fused_backward`` returns the gradients of x, v0, v1, weight and bias.
Inputs are made contiguous first: a channels_last tensor is copied to NCHW order.
"""

from __future__ import annotations

import functools
import math
import os

import torch
from torch import Tensor

from evonorm_search.codegen import runtime
from evonorm_search.codegen.source import LayerSource, generate
from evonorm_search.graph import LayerGraph
from evonorm_search.ops import reduce_count

__all__ = ["MAX_ELEMENTS", "fused_norm_act", "interpreting"]

# Kernels index with 32-bit offsets.
MAX_ELEMENTS = 2**31 - 1


def interpreting() -> bool:
    """Whether triton runs kernels in its interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=256)
def _source(graph_json: str) -> LayerSource:
    return generate(LayerGraph.from_json(graph_json))


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _saved_shapes(source: LayerSource, x: Tensor, training: bool, groups: int) -> list[int]:
    """Rows of each statistic's moment, in ``plan.statistics`` order."""
    plan = source.training if training else source.eval
    n, c, s = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return [c if plan.from_running(k) else
            runtime.statistic_rows(plan.graph.node(k).axis, n, c, s, groups)
            for k in plan.statistics]  # fmt: skip


@torch.library.custom_op("evonorm_search::fused_forward", mutates_args=())
def fused_forward(
    graph: str, x: Tensor, v0: Tensor, v1: Tensor, weight: Tensor | None, bias: Tensor | None,
    running: list[Tensor], groups: int, eps: float, training: bool, momentum: float,
) -> list[Tensor]:  # fmt: skip
    """[y, *moments, *means, *updated running estimates]; ``running`` lists the batch
    statistics' running estimates in node order."""
    source = _source(graph)
    plan = source.training if training else source.eval
    updated = [r.clone() for r in running]
    if x.numel() == 0:  # nothing to normalise: no kernel, and the estimates stay
        compute = _compute_dtype(x)
        rows = _saved_shapes(source, x, training, groups)
        saved = [x.new_full((r,), math.nan, dtype=compute) for r in rows]
        return [torch.empty_like(x, memory_format=torch.contiguous_format), *saved,
                *[t.clone() for t in saved], *updated]  # fmt: skip
    batch = [k for k in plan.statistics if plan.graph.node(k).axis == "batch"]
    y, moments, means = runtime.forward(
        source, x, v0, v1, weight, bias, groups=groups, eps=eps, training=training,
        momentum=momentum, running=dict(zip(batch, updated, strict=True)),
    )  # fmt: skip
    # Outputs of a custom op may not alias its inputs or each other: a running estimate
    # read in eval mode is copied.
    saved = [moments[k] for k in plan.statistics] + [means[k] for k in plan.statistics]
    taken = {t.data_ptr() for t in (*running, *updated)}
    return [y, *[t.clone() if t.data_ptr() in taken else t for t in saved], *updated]


@fused_forward.register_fake
def _(graph, x, v0, v1, weight, bias, running, groups, eps, training, momentum):
    rows = _saved_shapes(_source(graph), x, training, groups)
    compute = _compute_dtype(x)
    saved = [x.new_empty((r,), dtype=compute) for r in rows]
    return [
        torch.empty_like(x, memory_format=torch.contiguous_format),
        *saved,
        *[t.new_empty(t.shape) for t in saved],
        *[torch.empty_like(r) for r in running],
    ]


@torch.library.custom_op("evonorm_search::fused_backward", mutates_args=())
def fused_backward(
    graph: str, dy: Tensor, x: Tensor, v0: Tensor, v1: Tensor, weight: Tensor | None,
    saved: list[Tensor], groups: int, eps: float, training: bool,
) -> list[Tensor]:  # fmt: skip
    """[dx, dv0, dv1, dweight, dbias], the per-channel ones in the compute dtype."""
    source = _source(graph)
    plan = source.training if training else source.eval
    if x.numel() == 0:
        c = x.shape[1]
        return [torch.zeros_like(x), *[x.new_zeros(c, dtype=_compute_dtype(x)) for _ in range(4)]]
    half = len(saved) // 2
    moments = dict(zip(plan.statistics, saved[:half], strict=True))
    means = dict(zip(plan.statistics, saved[half:], strict=True))
    dx, *per_channel = runtime.backward(source, dy, x, v0, v1, weight, moments, means,
                                        groups=groups, eps=eps, training=training)  # fmt: skip
    return [dx, *[t.clone() for t in per_channel]]  # views of one buffer: outputs may not alias


@fused_backward.register_fake
def _(graph, dy, x, v0, v1, weight, saved, groups, eps, training):
    c = x.shape[1]
    return [torch.empty_like(x, memory_format=torch.contiguous_format),
            *[x.new_empty(c, dtype=_compute_dtype(x)) for _ in range(4)]]  # fmt: skip


def _setup_context(ctx, inputs, output) -> None:
    graph, x, v0, v1, weight, _, running, groups, eps, training, _ = inputs
    ctx.graph, ctx.groups, ctx.eps, ctx.training = graph, groups, eps, training
    ctx.has_weight = weight is not None
    ctx.running = len(running)
    ctx.save_for_backward(x, v0, v1, weight, *output[1 : len(output) - len(running)])


def _backward(ctx, grads):
    x, v0, v1, weight, *saved = ctx.saved_tensors
    dx, dv0, dv1, dweight, dbias = fused_backward(
        ctx.graph, grads[0], x, v0, v1, weight, saved, ctx.groups, ctx.eps, ctx.training
    )
    read = {j for node in _source(ctx.graph).training.graph.nodes for j in node.inputs}
    # Parameters that no node reads get no gradient, as in the eager layer.
    dv0 = dv0.to(v0.dtype) if 2 in read else None
    dv1 = dv1.to(v1.dtype) if 3 in read else None
    if ctx.has_weight:
        dweight, dbias = dweight.to(weight.dtype), dbias.to(weight.dtype)
    else:
        dweight = dbias = None
    return None, dx, dv0, dv1, dweight, dbias, [None] * ctx.running, None, None, None, None


fused_forward.register_autograd(_backward, setup_context=_setup_context)


def fused_norm_act(
    graph: str, x: Tensor, v0: Tensor, v1: Tensor, weight: Tensor | None,
    bias: Tensor | None, running: list[Tensor], *, groups: int, eps: float, training: bool,
    momentum: float,
) -> Tensor:  # fmt: skip
    """The layer's output through the fused kernels (``graph``: a canonical graph's JSON;
    ``running``: its batch statistics' estimates in node order)."""
    if x.numel() > MAX_ELEMENTS:
        raise ValueError(
            f"the triton backend indexes with 32 bits: an input of {x.numel():,} elements is "
            "too large (split the batch, or use backend='eager')"
        )
    n = reduce_count(x.shape, "batch", groups)
    if training and n == 1 and running:
        raise ValueError(  # as BatchNorm and the eager layer
            "expected more than 1 value per channel when training batch statistics, got "
            f"input of shape {tuple(x.shape)}"
        )
    y, *rest = fused_forward(graph, x.contiguous(), v0, v1, weight, bias, running,
                             groups, eps, training, momentum)  # fmt: skip
    if training and running:
        with torch.no_grad():
            for buffer, updated in zip(running, rest[-len(running) :], strict=True):
                buffer.copy_(updated)
    return y
