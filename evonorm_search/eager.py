"""The eager runtime: how PyTorch computes a layer's ops, moments and running estimates.

Standalone: this module imports only the standard library and torch, nothing of
evonorm_search, so that an exported layer carries its text verbatim (as it may carry the
launcher's).  Everything that computes a layer eagerly runs it: ``GraphNormAct``, the
functional hash's float64 probe, the kernels' launcher and every exported file, so that
they cannot drift apart.  What the ops *are* (arity, numerics, Triton forms, which moment a
statistic takes) is stated in the op registry, ``ops.py``; this module holds their torch
code.

Statistics reduce over one of five axis kinds of a tensor ``x`` shaped (N, C, *spatial):
batch (N and spatial, per channel), instance (spatial), group (spatial and C / groups
channels), layer (C and spatial) and channel (C, per sample and position).  Batch
statistics follow ``torch.nn.BatchNorm``: the biased moment normalises, and a running
estimate (of a variance, the unbiased one) is updated with ``momentum`` in training and
used in eval mode.
"""

import math
import numbers
import operator
from collections.abc import Mapping

import torch
from torch import Tensor, nn

# -- element-wise ops that are not one torch function ------------------------------------


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """max(a, b) with NaN propagation; ``+ 0.0`` turns a -0 into +0 (torch.maximum returns
    either zero of a (-0, +0) pair, depending on argument order and code path)."""
    return torch.maximum(a, b) + 0.0


def signed_log(a: Tensor) -> Tensor:
    """sign(a) * ln(abs(a)): the paper's odd log, defined on all reals but 0."""
    return torch.sign(a) * torch.log(torch.abs(a))


def signed_sqrt(a: Tensor) -> Tensor:
    """sign(a) * sqrt(abs(a)): the paper's odd square root."""
    return torch.sign(a) * torch.sqrt(torch.abs(a))


# -- axes --------------------------------------------------------------------------------


def effective_groups(num_channels: int, groups: int) -> int:
    """The largest divisor of ``num_channels`` not above ``groups`` (at least 1)."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return max(g for g in range(1, min(groups, num_channels) + 1) if num_channels % g == 0)


def reduced_dims(axis: str, ndim: int, lanes: int = 0) -> tuple[int, ...]:
    """The dimensions a statistic over ``axis`` (not group) reduces, for a tensor of ``ndim``
    dimensions whose N and C axes come after ``lanes`` leading axes."""
    n, c = lanes, lanes + 1
    spatial = tuple(range(c + 1, ndim))
    return {
        "batch": (n, *spatial),
        "instance": spatial,
        "layer": (c, *spatial),
        "channel": (c,),
    }[axis]


def reduce_count(
    shape: torch.Size | tuple[int, ...], axis: str, groups: int, lanes: int = 0
) -> int:
    """How many elements each statistic over ``axis`` reduces (``n``) for an x of ``shape``
    (after ``lanes`` leading axes)."""
    if axis == "group":
        return shape[lanes + 1] // groups * math.prod(shape[lanes + 2 :])
    dims = reduced_dims(axis, len(shape), lanes)
    return math.prod([shape[d] for d in dims])  # a list, not a generator: no graph break


def statistic_rows(axis: str, n: int, c: int, s: int, groups: int) -> int:
    """How many statistics (reduction groups) over ``axis`` an x of (n, c, s) has."""
    return {"instance": n * c, "group": n * groups, "layer": n, "batch": c, "channel": n * s}[axis]


def row_channels(axis: str, c: int, groups: int) -> int:
    """How many of the c channels one per-sample statistic over ``axis`` covers."""
    return {"instance": 1, "group": c // groups, "layer": c}[axis]


def block_rows(values: Tensor, axis: str, groups: int) -> Tensor:
    """Per-block partial values (N, C, T) (the kernels' reduction blocks: T per sample and
    channel) arranged as (statistics of ``axis``, the blocks of each)."""
    n, c, t = values.shape
    if axis == "batch":
        return values.transpose(0, 1).reshape(c, n * t)
    per = row_channels(axis, c, groups)
    return values.reshape(n * c // per, per * t)


# -- moments -----------------------------------------------------------------------------


def moment(t: Tensor, dims: tuple[int, ...] | list[int], kind: str) -> Tensor:
    """The moment ``kind`` (mean, var: the biased variance by torch's two-pass reduction,
    meansq: the mean square) of ``t`` over ``dims``, kept.  With nothing to reduce, the
    moment of one value (a variance of 0, NaN for NaN and inf); an empty ``t`` gives NaN
    without a warning."""
    if not dims:
        return {"mean": t, "var": t - t, "meansq": t * t}[kind]
    if t.numel() == 0:
        return t.mean(dims, keepdim=True)
    if kind == "mean":
        return t.mean(dims, keepdim=True)
    if kind == "var":
        return t.var(dims, correction=0, keepdim=True)
    return (t * t).mean(dims, keepdim=True)


def reduce_moment(e: Tensor, axis: str, groups: int, kind: str, lanes: int = 0) -> Tensor:
    """The moment ``kind`` of ``e`` (already broadcast to x's full shape) over ``axis``, kept.

    ``e`` is (N, C, *spatial) after ``lanes`` leading axes that are never reduced (the
    functional hash evaluates independent probes side by side).  Group results are broadcast
    back to the C channels, so that every result lines up with x's layout.
    """
    if axis == "group":
        *outer, c = e.shape[: lanes + 2]
        spatial = e.shape[lanes + 2 :]
        grouped = e.reshape(*outer, groups, c // groups, *spatial)
        r = moment(grouped, tuple(range(lanes + 2, grouped.dim())), kind)
        ones = [1] * len(spatial)
        return r.expand(*outer, groups, c // groups, *ones).reshape(*outer, c, *ones)
    return moment(e, reduced_dims(axis, e.dim(), lanes), kind)


def moment_of(kind: str, mean: Tensor, var: Tensor) -> Tensor:
    """The moment ``kind`` from a group's mean and biased variance (merged partial results)."""
    return {"mean": mean, "var": var, "meansq": var + mean * mean}[kind]


def finish(m: Tensor, root: bool, eps: float) -> Tensor:
    """A statistic from its moment: ``sqrt(m + eps)`` for rms and std, else ``m``."""
    return torch.sqrt(m + eps) if root else m


# -- running estimates -------------------------------------------------------------------


def running_estimate(m: Tensor, n: int, unbiased: bool) -> Tensor:
    """What a batch's moment ``m`` over ``n`` values adds to a running estimate: a variance
    times n / (n - 1) where the estimate is unbiased, as BatchNorm keeps it."""
    return m * (n / (n - 1)) if unbiased else m


def update_running(running: Tensor, m: Tensor, n: int, unbiased: bool, momentum: float) -> None:
    """Fold a batch's per-channel moment ``m`` over ``n`` values into ``running`` (C,) in
    place, with ``momentum``, as BatchNorm does; an empty batch leaves it alone."""
    if n > 1:
        with torch.no_grad():
            estimate = running_estimate(m.detach().reshape(-1), n, unbiased)
            running.mul_(1 - momentum).add_(estimate.to(running.dtype), alpha=momentum)


def check_batch(n: int, shape: tuple[int, ...]) -> None:
    """Refuse, as BatchNorm does, to train batch statistics on one value per channel."""
    if n == 1:
        raise ValueError(
            "expected more than 1 value per channel when training batch statistics, "
            f"got input of shape {tuple(shape)}"
        )


def per_channel(p: Tensor, like: Tensor) -> Tensor:
    """A (C,) tensor in ``like``'s dtype, shaped to broadcast along its channel axis."""
    return p.to(like.dtype).view(1, -1, *[1] * (like.dim() - 2))


def statistic(
    e: Tensor,
    shape: torch.Size | tuple[int, ...],
    axis: str,
    kind: str,
    *,
    root: bool,
    groups: int,
    eps: float,
    training: bool = True,
    momentum: float = 0.1,
    running: Tensor | None = None,
    unbiased: bool = False,
) -> Tensor:
    """A statistic of ``e`` broadcast to x's ``shape`` over ``axis``: the moment ``kind``,
    finished (``root``), kept.  A batch statistic with a ``running`` estimate (C,) updates
    it in training and reads it instead of the batch in eval mode; without one it always
    uses the batch."""
    if axis == "batch" and running is not None and not training:
        return finish(running.to(e.dtype).view(1, -1, *[1] * (len(shape) - 2)), root, eps)
    m = reduce_moment(e.expand(shape), axis, groups, kind)
    if axis == "batch" and training:
        n = reduce_count(shape, "batch", groups)
        check_batch(n, shape)
        if running is not None:
            update_running(running, m, n, unbiased, momentum)
    return finish(m, root, eps)


# -- the module every layer is -----------------------------------------------------------


def _positive_int(value: object) -> int:
    """``value`` as an int (numpy integers included, bools not) if it is >= 1."""
    if not isinstance(value, bool):
        try:
            if operator.index(value) >= 1:  # type: ignore[arg-type]
                return operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass
    raise ValueError(f"num_channels must be a positive int, got {value!r}")


class NormAct(nn.Module):
    """What every normalization-activation layer of a graph has, library or exported: its
    settings, the parameters ``v0`` (init 0), ``v1`` (1), ``weight`` (1) and ``bias`` (0),
    all (C,), a running estimate per batch statistic, the input checks, the compute dtype
    (float32 for 16- and 32-bit inputs, float64 for float64 ones) and the affine.

    ``running`` maps the state-dict names of the running estimates to their initial values
    (a subclass may state it once as the class attribute ``RUNNING``).
    """

    RUNNING: Mapping[str, float] = {}

    def __init__(
        self,
        num_channels: int,
        *,
        groups: int = 32,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        running: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        num_channels = _positive_int(num_channels)
        if not (isinstance(eps, numbers.Real) and eps > 0):
            raise ValueError(f"eps must be a number > 0, got {eps!r}")
        if not (isinstance(momentum, numbers.Real) and 0.0 <= momentum <= 1.0):
            # (BatchNorm's momentum=None, a cumulative average, is not supported.)
            raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
        self.num_channels = num_channels
        self.groups = effective_groups(num_channels, groups)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.affine = affine
        factory = {"device": device, "dtype": dtype}
        self.v0 = nn.Parameter(torch.empty(num_channels, **factory))
        self.v1 = nn.Parameter(torch.empty(num_channels, **factory))
        if affine:
            self.weight = nn.Parameter(torch.empty(num_channels, **factory))
            self.bias = nn.Parameter(torch.empty(num_channels, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self._running_init = dict(self.RUNNING if running is None else running)
        for name in self._running_init:
            self.register_buffer(name, torch.empty(num_channels, **factory))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        for name, init in self._running_init.items():
            getattr(self, name).fill_(init)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        with torch.no_grad():
            self.v0.zero_()
            self.v1.fill_(1.0)
            if self.affine:
                self.weight.fill_(1.0)
                self.bias.zero_()

    def check_input(self, x: Tensor) -> None:
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}")
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"expected input of shape (N, {self.num_channels}, *spatial), got {tuple(x.shape)}"
            )

    @staticmethod
    def compute(x: Tensor) -> Tensor:
        """``x`` in the dtype the graph runs in."""
        return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)

    def affine_out(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        """The graph's output ``y`` through the per-channel affine, in ``dtype``."""
        if self.affine:
            y = y * per_channel(self.weight, y) + per_channel(self.bias, y)
        return y.to(dtype)

    def settings(self) -> dict:
        """The keyword arguments every statistic of this layer takes."""
        return {
            "groups": self.groups,
            "eps": self.eps,
            "training": self.training,
            "momentum": self.momentum,
        }

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, groups={self.groups}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}"
        )
