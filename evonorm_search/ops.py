"""The op registry: the single table of every primitive a layer graph may use.

Each element-wise entry says how many inputs the op takes, how eager PyTorch computes it
(a function of ``eager.py``, or torch's own), how an exported file writes it, how it is
printed in a formula, its Triton expression and derivative, and what it does at 0 and for
negative inputs.  Each statistic names its moment, its finish and its running-estimate rule;
each moment and axis kind says how the generated kernels reduce, merge and differentiate
it.  Everything else (graph validation, the formula parser and printer, the eager layer, the
functional hash's probe, the code generator and its launcher, export, the docs' op
tables) reads these tables, so adding an element-wise op means adding one entry here.

Ops follow the EvoNorm paper (Liu et al. 2020, arXiv 2004.02967, Table 1).  ``log`` and
``sqrt`` are the paper's sign-preserving variants, so that every op is defined on all reals.
Statistics reduce over one of five axis kinds of a tensor ``x`` shaped (N, C, *spatial);
``AXIS_KINDS`` says over what, and along what the result varies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import torch
from torch import Tensor

from evonorm_search import eager
from evonorm_search.eager import effective_groups, reduce_count, reduce_moment

__all__ = [
    "AXES",
    "AXIS_KINDS",
    "ELEMENTWISE",
    "MOMENTS",
    "OPS",
    "STATISTICS",
    "AxisKind",
    "ElementwiseOp",
    "MomentKind",
    "Op",
    "StatisticOp",
    "effective_groups",
    "keeps_running",
    "reduce_count",
    "reduce_moment",
]

Moment = Literal["mean", "var", "meansq"]

# Printing precedence: a child is parenthesised when it binds more loosely than its parent.
PREC_ADD, PREC_MUL, PREC_UNARY, PREC_ATOM = 1, 2, 3, 4


@dataclass(frozen=True)
class AxisKind:
    """What a statistic over this axis kind reduces, and how the kernels find its groups.

    The Triton forms are expressions over the kernels' names: ``off`` (an element's flat
    offset in x viewed as (N, C, S)), ``N``, ``C``, ``S``, ``CG`` (channels per group) and,
    in the single-kernel path's tile, ``n``, ``ch``, ``r`` and ``ROW_CHANNELS``.  The
    eager reduction (which dimensions, how many rows) is ``eager.py``'s.
    """

    name: str
    reduces: str  # what one statistic reduces over
    varies: str  # the axes along which the result varies
    known_as: str  # the normalization layer that reduces the same way
    # The result's shape class: varies along N; along C ("none", "group" or "full"); along
    # the spatial axes.
    shape: tuple[bool, str, bool]
    row: str  # Triton: the statistic (row) of the element at ``off``
    length: str  # Triton: how many elements one row reduces
    # Triton, single-kernel path (None: its rows never fit one program): the row a tile
    # program holds, the sum of a tile value ``{v}`` over it, and how many elements that is.
    tile_row: str | None = None
    tile_sum: str = ""
    tile_count: str = ""
    running: bool = False  # keeps a running estimate, used in eval mode (as BatchNorm)
    # Its rows are the C values at one position: the element-wise pass reduces them itself
    # (Welford over the channels) and stores them; no reduction pass, no merge of blocks.
    per_position: bool = False
    # The single-kernel path's tile holds one row per channel: its values are a vector over
    # the tile's channels, stored under the tile's channel mask (else one value per tile).
    tile_per_channel: bool = False


@dataclass(frozen=True)
class MomentKind:
    """A moment a statistic reduces, with the kernels' rules for it (Triton expressions).

    ``from_mean_var`` is the moment from a row's mean ``{mean}`` and biased variance
    ``{var}`` (how merged partial results and the per-position Welford sums finish it);
    ``adjoint`` is the contribution to an element's input adjoint from the moment's adjoint
    ``{dm}``, the element's input ``{u}``, the row's mean ``{mean}`` and length ``{n}``.
    The torch side of both is ``eager.moment_of`` and autograd.
    """

    name: str
    summary: str
    from_mean_var: str
    adjoint: str
    # The backward pass needs the mean the moment was taken around.
    keeps_mean: bool = False


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

    # A function of eager.py or torch's own: the eager layer, the float64 probe and
    # exported files all call it (an export writes ``torch.<name>`` or eager.py's name).
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

    @property
    def python(self) -> str:
        """The op as a Python expression over ``{a}`` (and ``{b}``) for an exported file:
        the operator where it has one (Python's operator on tensors is the eager torch
        function), else a call of the eager function, ``torch.<name>`` or the eager runtime's
        function (which the file carries)."""
        if self.symbol is not None:
            return f"{self.symbol}{{a}}" if self.arity == 1 else f"{{a}} {self.symbol} {{b}}"
        args = ", ".join(("{a}", "{b}")[: self.arity])
        name = self.eager.__name__
        if getattr(eager, name, None) is self.eager:
            return f"{name}({args})"
        if getattr(torch, name, None) is self.eager:
            return f"torch.{name}({args})"
        raise ValueError(f"op {self.name!r}: its eager function is not torch's or eager.py's")


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
        return eager.finish(moment, self.root, eps)

    def eager(self, e: Tensor, axis: str, groups: int, eps: float) -> Tensor:
        """The statistic of a full-shape tensor ``e`` in training-mode semantics, keepdim."""
        return self.finish(reduce_moment(e, axis, groups, self.moment), eps)


_INSTANCE_SUM = "tl.sum({v}, axis=1)[:, None]"  # each channel's row, kept as a column
_TILE_SUM = "tl.sum(tl.sum({v}, axis=1), axis=0)"  # the whole tile

_AXIS_KINDS = (
    AxisKind(
        "batch",
        "N and spatial, per channel",
        "C",
        "BatchNorm",
        (False, "full", False),
        row="(off // S) % C",
        length="(N * S)",
        running=True,
    ),
    AxisKind(
        "instance",
        "spatial, per sample and channel",
        "N, C",
        "InstanceNorm",
        (True, "full", False),
        row="off // S",
        length="S",
        tile_row="n * C + ch",
        tile_sum=_INSTANCE_SUM,
        tile_count="S",
        tile_per_channel=True,
    ),
    AxisKind(
        "group",
        "spatial and the C/G channels of a group",
        "N, G",
        "GroupNorm",
        (True, "group", False),
        row="off // (CG * S)",
        length="(CG * S)",
        tile_row="n * (C // CG) + r",
        tile_sum=_TILE_SUM,
        tile_count="(ROW_CHANNELS * S)",
    ),
    AxisKind(
        "layer",
        "C and spatial, per sample",
        "N",
        "LayerNorm over (C, H, W)",
        (True, "none", False),
        row="off // (C * S)",
        length="(C * S)",
        tile_row="n",
        tile_sum=_TILE_SUM,
        tile_count="(ROW_CHANNELS * S)",
    ),
    AxisKind(
        "channel",
        "C, per sample and position",
        "N, spatial",
        "a transformer's LayerNorm/RMSNorm",
        (True, "none", True),
        row="(off // (C * S)) * S + off % S",
        length="C",
        per_position=True,
    ),
)

_MOMENTS = (
    MomentKind("mean", "the mean", "{mean}", "{dm} / {n}"),
    MomentKind(
        "var",
        "the biased variance (two-pass)",
        "{var}",
        "2.0 / {n} * {dm} * ({u} - {mean})",
        keeps_mean=True,
    ),
    MomentKind(
        "meansq", "the mean of squares", "{var} + {mean} * {mean}", "2.0 * ({dm} / {n}) * {u}"
    ),
)

AXIS_KINDS: Mapping[str, AxisKind] = MappingProxyType({a.name: a for a in _AXIS_KINDS})
AXES: tuple[str, ...] = tuple(AXIS_KINDS)
MOMENTS: Mapping[str, MomentKind] = MappingProxyType({m.name: m for m in _MOMENTS})


def keeps_running(axis: str | None) -> bool:
    """Whether a statistic over ``axis`` keeps a running estimate (read in eval mode)."""
    return axis is not None and AXIS_KINDS[axis].running


_ELEMENTWISE_OPS = (
    ElementwiseOp(
        "add",
        2,
        "a + b",
        "IEEE",
        torch.add,
        "({a} + {b})",
        ("{g}", "{g}"),
        commutative=True,
        symbol="+",
        precedence=PREC_ADD,
    ),
    ElementwiseOp(
        "mul",
        2,
        "a * b",
        "IEEE; 0 * inf is NaN",
        torch.mul,
        "({a} * {b})",
        ("{g} * {b}", "{g} * {a}"),
        commutative=True,
        symbol="*",
        precedence=PREC_MUL,
    ),
    ElementwiseOp(
        "div",
        2,
        "a / b",
        "a / 0 is +-inf, 0 / 0 is NaN (IEEE)",
        torch.div,
        "_div({a}, {b})",
        ("_div({g}, {b})", "_div(-{g} * {a}, {b} * {b})"),
        symbol="/",
        precedence=PREC_MUL,
    ),
    ElementwiseOp(
        "max",
        2,
        "max(a, b)",
        "NaN in either input gives NaN; max(-0, 0) = +0",
        eager.maximum,
        "(tl.maximum({a}, {b}, propagate_nan=tl.PropagateNan.ALL) + 0.0)",
        # ties split the gradient, as torch.maximum does
        (
            "tl.where({a} == {b}, {g} * 0.5, tl.where({a} < {b}, 0.0, {g}))",
            "tl.where({a} == {b}, {g} * 0.5, tl.where({b} < {a}, 0.0, {g}))",
        ),
        commutative=True,
    ),
    ElementwiseOp(
        "neg",
        1,
        "-a",
        "exact",
        torch.neg,
        "(-{a})",
        ("-{g}",),
        symbol="-",
        precedence=PREC_UNARY,
    ),
    ElementwiseOp(
        "sigmoid",
        1,
        "1 / (1 + exp(-a))",
        "sigmoid(0) = 0.5; in (0, 1)",
        torch.sigmoid,
        "tl.sigmoid({a})",
        ("{g} * (1.0 - {y}) * {y}",),
    ),
    # _tanh (kernels/prelude.py): libdevice's tanh does not run in the interpreter.
    ElementwiseOp(
        "tanh",
        1,
        "tanh(a)",
        "tanh(0) = 0; odd; in (-1, 1)",
        torch.tanh,
        "_tanh({a})",
        # sech^2 from the input: 1 - y*y cancels where |y| is near 1
        ("{g} * 4.0 * tl.sigmoid(2.0 * {a}) * tl.sigmoid(-2.0 * {a})",),
    ),
    ElementwiseOp(
        "exp",
        1,
        "e^a",
        "exp(0) = 1; inf above ~88.7 in float32",
        torch.exp,
        "tl.exp({a})",
        ("{g} * {y}",),
    ),
    ElementwiseOp(
        "log",
        1,
        "sign(a) * ln(abs(a))",
        "odd: log(-a) = -log(a); log(0) = 0 * -inf = NaN; log(+-1) = 0",
        eager.signed_log,
        "(_sign({a}) * tl.log(tl.abs({a})))",
        ("_div({g} * _sign({a}), tl.abs({a})) * _sign({a})",),
    ),
    ElementwiseOp(
        "abs",
        1,
        "the absolute value of a",
        "abs(-0.0) = 0",
        torch.abs,
        "tl.abs({a})",
        ("{g} * _sign({a})",),
    ),
    ElementwiseOp(
        "erf",
        1,
        "2 / sqrt(pi) * integral of e^(-t^2) from 0 to a",
        "erf(0) = 0; odd; in (-1, 1)",
        torch.erf,
        "tl.erf({a})",
        ("{g} * 1.1283791670955126 * tl.exp(-({a} * {a}))",),
    ),
    ElementwiseOp(
        "square",
        1,
        "a * a",
        "even; inf above ~1.8e19 in float32",
        torch.square,
        "({a} * {a})",
        ("{g} * 2.0 * {a}",),
    ),
    ElementwiseOp(
        "sqrt",
        1,
        "sign(a) * sqrt(abs(a))",
        "odd: sqrt(-a) = -sqrt(a); sqrt(0) = 0 with a NaN gradient (infinite slope)",
        eager.signed_sqrt,
        "(_sign({a}) * tl.sqrt(tl.abs({a})))",
        ("_div({g} * _sign({a}), 2.0 * tl.sqrt(tl.abs({a}))) * _sign({a})",),
    ),
)

_STATISTIC_OPS = (
    StatisticOp(
        "mean",
        1,
        "mean(a)",
        "any sign; batch: running mean, init 0",
        moment="mean",
        root=False,
        running_init=0.0,
        running_unbiased=False,
        buffer_kind="mean",
    ),
    StatisticOp(
        "rms",
        1,
        "sqrt(mean(a^2) + eps)",
        ">= sqrt(eps) > 0; batch: running mean square, init 1",
        moment="meansq",
        root=True,
        running_init=1.0,
        running_unbiased=False,
        buffer_kind="ms",
    ),
    StatisticOp(
        "std",
        1,
        "sqrt(var(a) + eps), biased var",
        ">= sqrt(eps) > 0; batch: running unbiased variance, init 1",
        moment="var",
        root=True,
        running_init=1.0,
        running_unbiased=True,
        buffer_kind="var",
    ),
)

ELEMENTWISE: Mapping[str, ElementwiseOp] = MappingProxyType(
    {op.name: op for op in _ELEMENTWISE_OPS}
)
STATISTICS: Mapping[str, StatisticOp] = MappingProxyType({op.name: op for op in _STATISTIC_OPS})
OPS: Mapping[str, Op] = MappingProxyType({**ELEMENTWISE, **STATISTICS})
