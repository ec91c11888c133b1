"""The ``torch.library`` custom ops around a layer's launched kernels: fake implementations
for tracing and an autograd formula, so that the fused layer trains under autograd and
traces under ``torch.compile`` like any built-in op.

Standalone, like the launcher beside it: it imports only math, typing, torch, the eager
runtime and the launcher, so that an exported layer carries its text verbatim after
theirs.
"""

import math
from typing import Any, Callable  # noqa: UP035 (math, typing, torch only)

import torch
from torch import Tensor

from evonorm_search.codegen.launch import (
    MAX_ELEMENTS,
    backward,
    compute_dtype,
    forward,
    plan_statistics,
)
from evonorm_search.eager import statistic_rows


def saved_rows(plan: dict, x: Tensor, training: bool, groups: int) -> list[int]:
    """Rows of each statistic's moment, in argument order."""
    n, c, s = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return [
        c if stat["running"] else statistic_rows(stat["axis"], n, c, s, groups)
        for stat in plan_statistics(plan, training).values()
    ]


def register_ops(
    namespace: str, plan_of: Callable[[str], dict], kernels_of: Callable[[str], Any]
) -> Callable:
    """Define the custom ops ``<namespace>::fused_forward`` and ``<namespace>::fused_backward``
    (fake implementations and an autograd formula included) and return ``fused_norm_act``,
    the layer's output through them.

    Both ops take a graph's JSON first; ``plan_of(graph_json)`` gives its plan and
    ``kernels_of(graph_json)`` its kernel module (loaded only to launch: fake
    implementations and the autograd formula need the plan alone).  ``fused_forward``
    returns the output, what backward needs (the statistics' moments and the means their
    variances were taken around; x is saved by the autograd formula) and the updated
    running estimates (an op with an autograd formula must be functional: the caller
    copies them into its buffers);
    ``fused_backward`` returns the gradients of x, v0, v1, weight and bias.  Inputs are
    made contiguous first: a channels_last tensor is copied to NCHW order.
    """

    @torch.library.custom_op(f"{namespace}::fused_forward", mutates_args=())
    def fused_forward(
        graph: str,
        x: Tensor,
        v0: Tensor,
        v1: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running: list[Tensor],
        groups: int,
        eps: float,
        training: bool,
        momentum: float,
    ) -> list[Tensor]:
        """[y, *moments, *means, *updated running estimates]; ``running`` lists the batch
        statistics' running estimates in node order."""
        plan = plan_of(graph)
        statistics = plan_statistics(plan, training)
        updated = [r.clone() for r in running]
        if x.numel() == 0:  # nothing to normalise: no kernel, and the estimates stay
            compute = compute_dtype(x)
            rows = saved_rows(plan, x, training, groups)
            saved = [x.new_full((r,), math.nan, dtype=compute) for r in rows]
            return [
                torch.empty_like(x, memory_format=torch.contiguous_format),
                *saved,
                *[t.clone() for t in saved],
                *updated,
            ]
        batch = [k for k, stat in statistics.items() if stat["keeps_running"]]
        y, moments, means = forward(
            kernels_of(graph),
            plan,
            x,
            v0,
            v1,
            weight,
            bias,
            groups=groups,
            eps=eps,
            training=training,
            momentum=momentum,
            running=dict(zip(batch, updated, strict=True)),
        )
        # Outputs of a custom op may not alias its inputs or each other: a running estimate
        # read in eval mode is copied.
        saved = [moments[k] for k in statistics] + [means[k] for k in statistics]
        taken = {t.data_ptr() for t in (*running, *updated)}
        return [y, *[t.clone() if t.data_ptr() in taken else t for t in saved], *updated]

    @fused_forward.register_fake
    def _(graph, x, v0, v1, weight, bias, running, groups, eps, training, momentum):
        rows = saved_rows(plan_of(graph), x, training, groups)
        compute = compute_dtype(x)
        saved = [x.new_empty((r,), dtype=compute) for r in rows]
        return [
            torch.empty_like(x, memory_format=torch.contiguous_format),
            *saved,
            *[t.new_empty(t.shape) for t in saved],
            *[torch.empty_like(r) for r in running],
        ]

    @torch.library.custom_op(f"{namespace}::fused_backward", mutates_args=())
    def fused_backward(
        graph: str,
        dy: Tensor,
        x: Tensor,
        v0: Tensor,
        v1: Tensor,
        weight: Tensor | None,
        saved: list[Tensor],
        groups: int,
        eps: float,
        training: bool,
    ) -> list[Tensor]:
        """[dx, dv0, dv1, dweight, dbias], the per-channel ones in the compute dtype."""
        plan = plan_of(graph)
        statistics = plan_statistics(plan, training)
        if x.numel() == 0:
            c = x.shape[1]
            return [
                torch.zeros_like(x),
                *[x.new_zeros(c, dtype=compute_dtype(x)) for _ in range(4)],
            ]
        half = len(saved) // 2
        moments = dict(zip(statistics, saved[:half], strict=True))
        means = dict(zip(statistics, saved[half:], strict=True))
        dx, *per_channel = backward(
            kernels_of(graph),
            plan,
            dy,
            x,
            v0,
            v1,
            weight,
            moments,
            means,
            groups=groups,
            eps=eps,
            training=training,
        )
        return [dx, *[t.clone() for t in per_channel]]  # views of one buffer: may not alias

    @fused_backward.register_fake
    def _(graph, dy, x, v0, v1, weight, saved, groups, eps, training):
        c = x.shape[1]
        return [
            torch.empty_like(x, memory_format=torch.contiguous_format),
            *[x.new_empty(c, dtype=compute_dtype(x)) for _ in range(4)],
        ]

    def setup_context(ctx, inputs, output) -> None:
        graph, x, v0, v1, weight, _, running, groups, eps, training, _ = inputs
        ctx.graph, ctx.groups, ctx.eps, ctx.training = graph, groups, eps, training
        ctx.has_weight = weight is not None
        ctx.running = len(running)
        ctx.save_for_backward(x, v0, v1, weight, *output[1 : len(output) - len(running)])

    def backward_formula(ctx, grads):
        x, v0, v1, weight, *saved = ctx.saved_tensors
        dx, dv0, dv1, dweight, dbias = fused_backward(
            ctx.graph, grads[0], x, v0, v1, weight, saved, ctx.groups, ctx.eps, ctx.training
        )
        reads = plan_of(ctx.graph)["reads"]
        # Parameters that no node reads get no gradient, as in the eager layer.
        dv0 = dv0.to(v0.dtype) if reads["v0"] else None
        dv1 = dv1.to(v1.dtype) if reads["v1"] else None
        if ctx.has_weight:
            dweight, dbias = dweight.to(weight.dtype), dbias.to(weight.dtype)
        else:
            dweight = dbias = None
        return None, dx, dv0, dv1, dweight, dbias, [None] * ctx.running, None, None, None, None

    fused_forward.register_autograd(backward_formula, setup_context=setup_context)

    def fused_norm_act(
        graph: str,
        x: Tensor,
        v0: Tensor,
        v1: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running: list[Tensor],
        *,
        groups: int,
        eps: float,
        training: bool,
        momentum: float,
    ) -> Tensor:
        """The layer's output through the fused kernels (``graph``: a canonical graph's
        JSON; ``running``: its batch statistics' estimates in node order)."""
        if x.numel() > MAX_ELEMENTS:
            raise ValueError(
                f"the triton backend indexes with 32 bits: an input of {x.numel():,} elements "
                "is too large (split the batch, or use backend='eager')"
            )
        count = x.shape[0] * math.prod(x.shape[2:])  # per batch statistic
        if training and count == 1 and running:
            raise ValueError(  # as BatchNorm and the eager layer
                "expected more than 1 value per channel when training batch statistics, got "
                f"input of shape {tuple(x.shape)}"
            )
        y, *rest = fused_forward(
            graph, x.contiguous(), v0, v1, weight, bias, running, groups, eps, training, momentum
        )
        if training and running:
            with torch.no_grad():
                for buffer, updated in zip(running, rest[-len(running) :], strict=True):
                    buffer.copy_(updated)
        return y

    return fused_norm_act
