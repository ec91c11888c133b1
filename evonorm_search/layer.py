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
import types
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor

from evonorm_search import eager
from evonorm_search.graph import NUM_INITIAL, LayerGraph, as_graph
from evonorm_search.ops import ELEMENTWISE, STATISTICS, keeps_running

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
        # A statistic's input is broadcast to x's full shape first, so n is always x's.
        values.append(
            eager.statistic(
                inputs[0],
                x.shape,
                node.axis,
                stat.moment,
                root=stat.root,
                groups=groups,
                eps=eps,
                training=training,
                momentum=momentum,
                running=running.get(index) if running is not None else None,
                unbiased=stat.running_unbiased,
            )
        )
    return values


def _triton_refusal(program: LayerGraph) -> str | None:
    """Why the triton backend cannot run ``program``, or None (without importing triton)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    from evonorm_search.codegen.source import unsupported

    return unsupported(program)


class GraphNormAct(eager.NormAct):
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
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (available: {', '.join(BACKENDS)})")
        graph = as_graph(graph).validate()
        program = graph.canonical()  # what runs: pruned, merged, renumbered
        running_names = {
            index: running_buffer_name(program, index)
            for index, node in enumerate(program.nodes, start=NUM_INITIAL)
            if keeps_running(node.axis)
        }
        super().__init__(
            num_channels,
            groups=groups,
            eps=eps,
            momentum=momentum,
            affine=affine,
            device=device,
            dtype=dtype,
            running={
                name: STATISTICS[program.node(index).op].running_init
                for index, name in running_names.items()
            },
        )
        self.graph = graph
        self.program = program
        self.formula = program.formula()
        self._program_json = program.to_json()
        self._running_names = running_names
        self.backend = backend
        self._triton_refusal = _triton_refusal(program) if backend != "eager" else None
        if backend == "triton" and self._triton_refusal:
            raise ValueError(f"backend='triton' cannot run {self.formula}: {self._triton_refusal}")
        if backend == "triton":
            from evonorm_search.codegen.launch import interpreting

            interpreting()  # asked here, so that torch.compile reads the answer when tracing

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if self._runs_triton(x):
            from evonorm_search.codegen.op import fused_norm_act

            return fused_norm_act(
                self._program_json,
                x,
                self.v0,
                self.v1,
                self.weight,
                self.bias,
                [getattr(self, name) for name in self._running_names.values()],
                groups=self.groups,
                eps=self.eps,
                training=self.training,
                momentum=self.momentum,
            )
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
        running = {i: getattr(self, name) for i, name in self._running_names.items()}
        compute = self.compute(x)
        y = evaluate_graph(
            self.program,
            compute,
            self.v0.to(compute.dtype),
            self.v1.to(compute.dtype),
            groups=self.groups,
            eps=self.eps,
            training=self.training,
            momentum=self.momentum,
            running=running,
        )[-1]
        return self.affine_out(y, x.dtype)

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
