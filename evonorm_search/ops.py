"""The op registry: the single table of every primitive a layer graph may use.

Each entry says how many inputs the op takes, how eager PyTorch computes it, how it is
printed in a formula and what it does at 0 and for negative inputs.  Everything else
(graph validation, the formula parser and printer, the eager layer, the README's op table)
reads this table, so adding an op means adding one entry here.

Ops follow the EvoNorm paper (Liu et al. 2020, arXiv 2004.02967, Table 1).  ``log`` and
``sqrt`` are the paper's sign-preserving variants, so that every op is defined on all reals.
Statistics reduce over one of five axis kinds of a tensor ``x`` shaped (N, C, *spatial):

=========  ==============================  ===============================
axis       reduces over                    result varies along
=========  ==============================  ===============================
batch      N and spatial, per channel      C
instance   spatial, per sample and channel N, C
group      spatial and C/G channels        N, the G groups of C
layer      C and spatial, per sample       N
channel    C, per sample and position      N, spatial
=========  ==============================  ===============================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "AXES",
    "ELEMENTWISE",
    "OPS",
    "STATISTICS",
    "ElementwiseOp",
    "Op",
    "StatisticOp",
    "effective_groups",
    "reduce_count",
    "reduce_moment",
]

AXES: tuple[str, ...] = ("batch", "instance", "group", "layer", "channel")

Moment = Literal["mean", "var", "meansq"]

# Printing precedence: a child is parenthesised when it binds more loosely than its parent.
PREC_ADD, PREC_MUL, PREC_UNARY, PREC_ATOM = 1, 2, 3, 4


@dataclass(frozen=True)
class Op:
    """What every primitive has: a name, an arity and documentation of its numerics."""

    name: str
    arity: int
    summary: str  # what it computes, in formula notation
    numerics: str  # behaviour at 0 and for negative inputs (IEEE elsewhere)


@dataclass(frozen=True)
class ElementwiseOp(Op):
    """An element-wise op; inputs broadcast against each other."""

    eager: Callable[..., Tensor]
    # The op as a Triton expression over float tensors ``{a}`` (and ``{b}``), with the
    # eager semantics (signed zeros, NaN propagation); helpers such as ``_sign`` live in
    # kernels/prelude.py.  The code generator fills it in.
    triton: str = ""
    # Reverse-mode rules: per input, its adjoint contribution as a Triton expression of the
    # output's adjoint ``{g}``, the inputs ``{a}``, ``{b}`` and the output ``{y}``, written
    # as torch's autograd computes it (so that NaN and signed zeros agree).
    grad: tuple[str, ...] = ()
    commutative: bool = False
    # Printed as an infix/prefix operator when set ("+", "*", "/", "-"), else as `name(a, b)`.
    symbol: str | None = None
    precedence: int = PREC_ATOM


@dataclass(frozen=True)
class StatisticOp(Op):
    """A statistical moment of its input, broadcast to x's shape, over one axis kind.

    ``moment`` is what is reduced, and what a batch statistic keeps as its running estimate;
    the value is ``moment`` itself or ``sqrt(moment + eps)`` when ``root`` is set.
    """

    moment: Moment
    root: bool
    running_init: float  # initial running estimate (as BatchNorm: mean 0, variance 1)
    running_unbiased: bool  # the running estimate multiplies a variance by n / (n - 1)
    buffer_kind: str  # running buffers are named running_<buffer_kind>_<node index>

    def finish(self, moment: Tensor, eps: float) -> Tensor:
        """The statistic from its moment (used with batch moments and running estimates)."""
        return torch.sqrt(moment + eps) if self.root else moment

    def eager(self, e: Tensor, axis: str, groups: int, eps: float) -> Tensor:
        """The statistic of a full-shape tensor ``e`` in training-mode semantics, keepdim."""
        return self.finish(reduce_moment(e, axis, groups, self.moment), eps)


def _max(a: Tensor, b: Tensor) -> Tensor:
    # + 0.0 turns a -0 into +0: torch.maximum returns either zero of a (-0, +0) pair
    # depending on the argument order and on the code path (vectorised or not).
    return torch.maximum(a, b) + 0.0


def _signed_log(a: Tensor) -> Tensor:
    return torch.sign(a) * torch.log(torch.abs(a))


def _signed_sqrt(a: Tensor) -> Tensor:
    return torch.sign(a) * torch.sqrt(torch.abs(a))


_ELEMENTWISE_OPS = (
    ElementwiseOp(
        "add", 2, "a + b", "IEEE", torch.add, "({a} + {b})", ("{g}", "{g}"),
        commutative=True, symbol="+", precedence=PREC_ADD,
    ),
    ElementwiseOp(
        "mul", 2, "a * b", "IEEE; 0 * inf is NaN", torch.mul,
        "({a} * {b})", ("{g} * {b}", "{g} * {a}"),
        commutative=True, symbol="*", precedence=PREC_MUL,
    ),
    ElementwiseOp(
        "div", 2, "a / b", "a / 0 is +-inf, 0 / 0 is NaN (IEEE)", torch.div,
        "_div({a}, {b})",
        ("_div({g}, {b})", "_div(-{g} * {a}, {b} * {b})"),
        symbol="/", precedence=PREC_MUL,
    ),
    ElementwiseOp(
        "max", 2, "max(a, b)", "NaN in either input gives NaN; max(-0, 0) = +0", _max,
        "(tl.maximum({a}, {b}, propagate_nan=tl.PropagateNan.ALL) + 0.0)",
        # ties split the gradient, as torch.maximum does
        ("tl.where({a} == {b}, {g} * 0.5, tl.where({a} < {b}, 0.0, {g}))",
         "tl.where({a} == {b}, {g} * 0.5, tl.where({b} < {a}, 0.0, {g}))"), commutative=True,
    ),
    ElementwiseOp(
        "neg", 1, "-a", "exact", torch.neg, "(-{a})", ("-{g}",),
        symbol="-", precedence=PREC_UNARY,
    ),
    ElementwiseOp(
        "sigmoid", 1, "1 / (1 + exp(-a))", "sigmoid(0) = 0.5; in (0, 1)", torch.sigmoid,
        "tl.sigmoid({a})", ("{g} * (1.0 - {y}) * {y}",),
    ),
    # _tanh (kernels/prelude.py): libdevice's tanh does not run in the interpreter.
    ElementwiseOp(
        "tanh", 1, "tanh(a)", "tanh(0) = 0; odd; in (-1, 1)", torch.tanh, "_tanh({a})",
        # sech^2 from the input: 1 - y*y cancels where |y| is near 1
        ("{g} * 4.0 * tl.sigmoid(2.0 * {a}) * tl.sigmoid(-2.0 * {a})",),
    ),
    ElementwiseOp(
        "exp", 1, "e^a", "exp(0) = 1; inf above ~88.7 in float32", torch.exp,
        "tl.exp({a})", ("{g} * {y}",),
    ),
    ElementwiseOp(
        "log", 1, "sign(a) * ln(abs(a))",
        "odd: log(-a) = -log(a); log(0) = 0 * -inf = NaN; log(+-1) = 0", _signed_log,
        "(_sign({a}) * tl.log(tl.abs({a})))",
        ("_div({g} * _sign({a}), tl.abs({a})) * _sign({a})",),
    ),
    ElementwiseOp(
        "abs", 1, "the absolute value of a", "abs(-0.0) = 0", torch.abs,
        "tl.abs({a})", ("{g} * _sign({a})",),
    ),
    ElementwiseOp(
        "square", 1, "a * a", "even; inf above ~1.8e19 in float32", torch.square,
        "({a} * {a})", ("{g} * 2.0 * {a}",),
    ),
    ElementwiseOp(
        "sqrt", 1, "sign(a) * sqrt(abs(a))",
        "odd: sqrt(-a) = -sqrt(a); sqrt(0) = 0 with a NaN gradient (infinite slope)",
        _signed_sqrt, "(_sign({a}) * tl.sqrt(tl.abs({a})))",
        ("_div({g} * _sign({a}), 2.0 * tl.sqrt(tl.abs({a}))) * _sign({a})",),
    ),
)  # fmt: skip

_STATISTIC_OPS = (
    StatisticOp(
        "mean", 1, "mean(a)", "any sign; batch: running mean, init 0",
        moment="mean", root=False, running_init=0.0, running_unbiased=False, buffer_kind="mean",
    ),
    StatisticOp(
        "rms", 1, "sqrt(mean(a^2) + eps)", ">= sqrt(eps) > 0; batch: running mean square, init 1",
        moment="meansq", root=True, running_init=1.0, running_unbiased=False, buffer_kind="ms",
    ),
    StatisticOp(
        "std", 1, "sqrt(var(a) + eps), biased var",
        ">= sqrt(eps) > 0; batch: running unbiased variance, init 1",
        moment="var", root=True, running_init=1.0, running_unbiased=True, buffer_kind="var",
    ),
)  # fmt: skip

ELEMENTWISE: Mapping[str, ElementwiseOp] = MappingProxyType(
    {op.name: op for op in _ELEMENTWISE_OPS}
)
STATISTICS: Mapping[str, StatisticOp] = MappingProxyType({op.name: op for op in _STATISTIC_OPS})
OPS: Mapping[str, Op] = MappingProxyType({**ELEMENTWISE, **STATISTICS})


def effective_groups(num_channels: int, groups: int) -> int:
    """The largest divisor of ``num_channels`` not above ``groups`` (at least 1)."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return max(g for g in range(1, min(groups, num_channels) + 1) if num_channels % g == 0)


def _reduced_dims(axis: str, ndim: int, lanes: int = 0) -> tuple[int, ...]:
    n, c = lanes, lanes + 1  # the N and C axes come after any leading lane axes
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
    dims = _reduced_dims(axis, len(shape), lanes)
    return math.prod([shape[d] for d in dims])  # a list, not a generator: no graph break


def _moment(t: Tensor, dims: tuple[int, ...], moment: Moment) -> Tensor:
    if not dims:  # nothing to reduce (instance statistics of a dense (N, C) tensor)
        # The variance of one value: 0, or NaN for NaN and inf (as a reduction would give).
        return {"mean": t, "var": t - t, "meansq": t * t}[moment]
    if t.numel() == 0:  # an empty batch: NaN moments (the output is empty), no warnings
        return t.mean(dims, keepdim=True)
    if moment == "mean":
        return t.mean(dims, keepdim=True)
    if moment == "var":
        return t.var(dims, correction=0, keepdim=True)
    return (t * t).mean(dims, keepdim=True)


def reduce_moment(e: Tensor, axis: str, groups: int, moment: Moment, lanes: int = 0) -> Tensor:
    """``moment`` of ``e`` (already broadcast to x's full shape) over ``axis``, keepdim.

    ``e`` is (N, C, *spatial) after ``lanes`` leading axes that are never reduced (the
    functional hash evaluates independent probes side by side).  Group results are broadcast
    back to the C channels, so that every result lines up with x's layout.  Variances use
    torch's two-pass reduction, never E[x^2] - E[x]^2.
    """
    if axis == "group":
        *outer, c = e.shape[: lanes + 2]
        spatial = e.shape[lanes + 2 :]
        grouped = e.reshape(*outer, groups, c // groups, *spatial)
        r = _moment(grouped, tuple(range(lanes + 2, grouped.dim())), moment)
        ones = [1] * len(spatial)
        return r.expand(*outer, groups, c // groups, *ones).reshape(*outer, c, *ones)
    return _moment(e, _reduced_dims(axis, e.dim(), lanes), moment)
