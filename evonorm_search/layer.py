"""GraphNormAct: a LayerGraph as a drop-in normalization-activation ``nn.Module``.

The module runs the graph's canonical form on tensors shaped (N, C, *spatial), then the
per-channel affine ``y * weight + bias``.  Batch statistics follow ``torch.nn.BatchNorm``:
biased variance to normalise, a running estimate per batch-statistic node (unbiased for
variances) updated with ``momentum`` in training and used in eval mode.  Statistics and
element-wise ops run in float32 for 16- and 32-bit inputs and in float64 for float64 ones.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import numbers
import operator
import types
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor, nn

from evonorm_search.graph import NUM_INITIAL, LayerGraph, as_graph
from evonorm_search.ops import (
    ELEMENTWISE,
    STATISTICS,
    effective_groups,
    reduce_count,
    reduce_moment,
)

__all__ = ["BACKENDS", "GraphNormAct", "evaluate_graph", "running_buffer_name"]

BACKENDS = ("auto", "eager", "triton", "inductor")


def running_buffer_name(graph: LayerGraph, index: int) -> str:
    """State-dict name of the running estimate kept by batch-statistic node ``index`` of a
    canonical graph, e.g. ``running_var_5``."""
    return f"running_{STATISTICS[graph.node(index).op].buffer_kind}_{index}"


def evaluate_graph(
    graph: LayerGraph,
    x: Tensor,
    v0: Tensor,
    v1: Tensor,
    *,
    groups: int,
    eps: float,
    training: bool = True,
    momentum: float = 0.1,
    running: MutableMapping[int, Tensor] | None = None,
) -> list[Tensor]:
    """The value of every node of ``graph`` (initial nodes first) on input ``x``.

    ``v0`` and ``v1`` have shape (C,).  Values keep singleton axes where their shape class
    does not vary (a batch statistic is (1, C, 1, ...)).  ``running`` maps batch-statistic
    node indices to running estimates of shape (C,): updated in place in training, used
    instead of the batch in eval mode.  Without it, batch statistics always use the batch.
    """
    channel_view = (1, -1, *[1] * (x.dim() - 2))
    values = [x, x.new_zeros(()), v0.view(channel_view), v1.view(channel_view)]
    for index, node in enumerate(graph.nodes, start=NUM_INITIAL):
        inputs = [values[j] for j in node.inputs]
        if node.axis is None:
            values.append(ELEMENTWISE[node.op].eager(*inputs))
            continue
        stat = STATISTICS[node.op]
        buffer = running.get(index) if running is not None else None
        if node.axis == "batch" and buffer is not None and not training:
            values.append(stat.finish(buffer.to(x.dtype).view(channel_view), eps))
            continue
        # A statistic's input is broadcast to x's full shape first, so n is always x's.
        moment = reduce_moment(inputs[0].expand(x.shape), node.axis, groups, stat.moment)
        if node.axis == "batch" and training:
            n = reduce_count(x.shape, "batch", groups)
            if n == 1:  # as BatchNorm; an empty batch passes and leaves the estimate alone
                raise ValueError(
                    "expected more than 1 value per channel when training batch "
                    f"statistics, got input of shape {tuple(x.shape)}"
                )
            if buffer is not None and n > 1:
                with torch.no_grad():
                    estimate = moment.detach().reshape(-1)
                    if stat.running_unbiased:
                        estimate = estimate * (n / (n - 1))
                    buffer.mul_(1 - momentum).add_(estimate.to(buffer.dtype), alpha=momentum)
        values.append(stat.finish(moment, eps))
    return values


def _triton_refusal(program: LayerGraph) -> str | None:
    """Why the triton backend cannot run ``program``, or None (without importing triton)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    from evonorm_search.codegen.source import unsupported

    return unsupported(program)


def _positive_int(value: Any) -> int:
    """``value`` as an int (numpy integers included, bools not) if it is >= 1."""
    if not isinstance(value, bool):
        try:
            if operator.index(value) >= 1:
                return operator.index(value)
        except TypeError:
            pass
    raise ValueError(f"num_channels must be a positive int, got {value!r}")


class GraphNormAct(nn.Module):
    """A normalization-activation layer computed by a :class:`LayerGraph`.

    Args:
        graph: a ``LayerGraph``, a formula (``"x * sigmoid(v1 * x) / std_group(x)"``) or
            graph JSON (text or dict).  It must be a valid layer (see ``LayerGraph.validate``).
        num_channels: C, the size of axis 1 of the input.
        groups: groups for group statistics; falls back to the largest divisor of C not
            above it (the value in use is ``self.groups``).
        eps: added to variances and mean squares before the square root.
        momentum: weight of the newest batch in running estimates, as in BatchNorm.
        affine: apply the per-channel ``weight`` (gamma) and ``bias`` (beta) after the graph.
        backend: ``"eager"`` (PyTorch ops); ``"triton"`` (the graph's fused Triton
            kernels: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``; inputs are
            made contiguous, so a channels_last tensor is copied to NCHW order);
            ``"inductor"`` (the eager computation under ``torch.compile``, for CPU
            training); ``"auto"`` (triton for CUDA tensors where triton is installed,
            eager elsewhere).  A graph the triton backend cannot compile is refused here.

    Parameters ``v0`` (init 0), ``v1`` (init 1), ``weight`` (1) and ``bias`` (0), all (C,).
    """

    def __init__(
        self,
        graph: LayerGraph | str | Mapping[str, Any],
        num_channels: int,
        *,
        groups: int = 32,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_channels = _positive_int(num_channels)
        if not (isinstance(eps, numbers.Real) and eps > 0):
            raise ValueError(f"eps must be a number > 0, got {eps!r}")
        if not (isinstance(momentum, numbers.Real) and 0.0 <= momentum <= 1.0):
            # (BatchNorm's momentum=None, a cumulative average, is not supported.)
            raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (available: {', '.join(BACKENDS)})")
        self.graph = as_graph(graph).validate()
        self.program = self.graph.canonical()  # what runs: pruned, merged, renumbered
        self.formula = self.program.formula()
        self._program_json = self.program.to_json()
        self.num_channels = num_channels
        self.groups = effective_groups(num_channels, groups)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.affine = affine
        self.backend = backend
        self._triton_refusal = _triton_refusal(self.program) if backend != "eager" else None
        if backend == "triton" and self._triton_refusal:
            raise ValueError(f"backend='triton' cannot run {self.formula}: "
                             f"{self._triton_refusal}")  # fmt: skip
        if backend == "triton":
            from evonorm_search.codegen.launch import interpreting

            interpreting()  # asked here, so that torch.compile reads the answer when tracing

        factory = {"device": device, "dtype": dtype}
        self.v0 = nn.Parameter(torch.empty(num_channels, **factory))
        self.v1 = nn.Parameter(torch.empty(num_channels, **factory))
        if affine:
            self.weight = nn.Parameter(torch.empty(num_channels, **factory))
            self.bias = nn.Parameter(torch.empty(num_channels, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self._running_names: dict[int, str] = {}
        for index, node in enumerate(self.program.nodes, start=NUM_INITIAL):
            if node.axis == "batch":
                name = running_buffer_name(self.program, index)
                self.register_buffer(name, torch.empty(num_channels, **factory))
                self._running_names[index] = name
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        for index, name in self._running_names.items():
            init = STATISTICS[self.program.node(index).op].running_init
            getattr(self, name).fill_(init)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        with torch.no_grad():
            self.v0.zero_()
            self.v1.fill_(1.0)
            if self.affine:
                self.weight.fill_(1.0)
                self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}")
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"expected input of shape (N, {self.num_channels}, *spatial), got {tuple(x.shape)}"
            )
        if self._runs_triton(x):
            from evonorm_search.codegen.op import fused_norm_act

            return fused_norm_act(
                self._program_json, x, self.v0, self.v1, self.weight, self.bias,
                [getattr(self, name) for name in self._running_names.values()],
                groups=self.groups, eps=self.eps, training=self.training,
                momentum=self.momentum,
            )  # fmt: skip
        if self.backend == "inductor":
            return _compiled_forward(self._program_json)(self, x)
        return self._eager_forward(x)

    def _runs_triton(self, x: Tensor) -> bool:
        if self.backend == "auto":
            return x.is_cuda and not self._triton_refusal
        if self.backend != "triton":
            return False
        from evonorm_search.codegen.launch import interpreting

        if not (x.is_cuda or interpreting()):
            raise RuntimeError(
                f"backend='triton' runs CUDA tensors (or any tensor under TRITON_INTERPRET=1), "
                f"got a {x.device.type} tensor: use backend='auto' or 'eager'"
            )
        return True

    def _eager_forward(self, x: Tensor) -> Tensor:
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        running = {i: getattr(self, name) for i, name in self._running_names.items()}
        y = evaluate_graph(
            self.program,
            x.to(compute),
            self.v0.to(compute),
            self.v1.to(compute),
            groups=self.groups,
            eps=self.eps,
            training=self.training,
            momentum=self.momentum,
            running=running,
        )[-1]
        if self.affine:
            view = (1, -1, *[1] * (x.dim() - 2))
            y = y * self.weight.to(compute).view(view) + self.bias.to(compute).view(view)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, formula={self.formula!r}, groups={self.groups}, "
            f"eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"backend={self.backend!r}"
        )


@functools.lru_cache(maxsize=64)
def _compiled_forward(program_json: str) -> Callable[[GraphNormAct, Tensor], Tensor]:
    """``GraphNormAct._eager_forward`` under ``torch.compile``, with its own copy of the code
    per graph: dynamo keeps compiled variants per code object and stops compiling one after
    ``cache_size_limit`` (8) of them, which a process training many candidates would reach."""
    method = GraphNormAct._eager_forward
    name = f"_eager_forward_{hashlib.sha256(program_json.encode()).hexdigest()[:12]}"
    copy = types.FunctionType(method.__code__.replace(co_name=name), method.__globals__, name)
    return torch.compile(copy)
