import ast
import inspect
import math

import pytest
import torch

from evonorm_search import LayerGraph, Node, eager
from evonorm_search.export import TEMPLATES
from evonorm_search.ops import (
    AXES,
    AXIS_KINDS,
    ELEMENTWISE,
    MOMENTS,
    OPS,
    STATISTICS,
    effective_groups,
    reduce_count,
    reduce_moment,
)

PAPER_OPS = {
    "add",
    "mul",
    "div",
    "max",
    "neg",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "abs",
    "square",
    "sqrt",
}


def test_registry_has_the_papers_ops_and_statistics():
    assert set(ELEMENTWISE) >= PAPER_OPS
    assert set(STATISTICS) == {"mean", "rms", "std"}
    assert set(OPS) == set(ELEMENTWISE) | {"mean", "rms", "std"}
    assert AXES == ("batch", "instance", "group", "layer", "channel")


# Inputs that reach every op's special cases: signed zeros, +-1, large values, inf, NaN.
SPECIALS = torch.tensor(
    [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 100.0, -100.0, math.inf, -math.inf, math.nan],
    dtype=torch.float64,
)


def _same(a, b):
    """Equal values with equal signs of zero; NaN equals NaN."""
    return bool(((a == b) & (torch.signbit(a) == torch.signbit(b)) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_has_every_form(name):
    """Eager (float32 and the float64 probe), Triton expression, derivative, export and
    text: what the layer, the functional hash, the compiler, export and the printer read."""
    op = OPS[name]
    assert op.name == name
    assert op.arity in (1, 2)
    assert op.summary and op.numerics
    # text: the printer writes a node of the op, and the parser reads it back
    node_inputs = {1: (0,), 2: (0, 3)}[op.arity]
    graph = LayerGraph(
        [Node(name, node_inputs, "batch" if name in STATISTICS else None), Node("add", (0, 4))]
    )
    assert LayerGraph.parse(graph.formula()).canonical() == graph.canonical()
    if name in STATISTICS:
        assert op.arity == 1
        assert op.moment in MOMENTS
        assert op.buffer_kind in ("mean", "var", "ms")
        assert inspect.signature(op.eager).parameters.keys() == {"e", "axis", "groups", "eps"}
        for axis in AXES:
            assert (name, axis) in TEMPLATES
        return
    a, b = SPECIALS[:, None], SPECIALS[None, :]
    args = (a, b)[: op.arity]
    value = op.eager(*args)  # the float64 probe
    assert value.dtype == torch.float64
    assert op.eager(*[t.float() for t in args]).dtype == torch.float32
    # export: the expression an exported file runs computes the eager value, bit for bit
    namespace = {"torch": torch, **vars(eager), "a": a, "b": b}
    exported = eval(TEMPLATES[name, None].format(a="a", b="b"), namespace)
    assert _same(exported.expand_as(value), value)
    # Triton: an expression, and one derivative rule per input, over the documented names
    for text in (op.triton, *op.grad):
        ast.parse(text.format(a="a", b="b", g="g", y="y"), mode="eval")
    assert op.triton and len(op.grad) == op.arity
    assert op.symbol in (None, "+", "-", "*", "/")
    assert (op.symbol == "-") == (name == "neg")


@pytest.mark.parametrize("axis", AXES)
def test_every_axis_kind_has_every_form(axis):
    kind = AXIS_KINDS[axis]
    assert kind.reduces and kind.varies and kind.known_as
    for text in (kind.row, kind.length):
        ast.parse(text, mode="eval")
    assert kind.running == (axis == "batch")
    if kind.tile_row is not None:
        for text in (kind.tile_row, kind.tile_sum.format(v="v"), kind.tile_count):
            ast.parse(text, mode="eval")
    # the shape class is where the eager reduction keeps its result varying
    x = torch.randn(4, 6, 3, 5)
    kept = reduce_moment(x, axis, 2, "mean")
    assert (kept.shape[0] > 1, kept.shape[2] > 1) == (kind.shape[0], kind.shape[2])
    # reduced per position (in the element-wise pass) exactly where the result varies along
    # the spatial axes; a tile's values are per channel exactly where the result is
    assert kind.per_position == kind.shape[2]
    assert kind.tile_per_channel == (kind.tile_row is not None and kind.shape[1] == "full")
    if not kind.per_position:
        # The launcher merges blocks of partial results (N, C, T) per row: eager.block_rows
        # puts each block in the row that the kernels' form of the axis gives it.
        n, c, s, t = 4, 6, 5, 7
        off = ((torch.arange(n).view(n, 1, 1) * c + torch.arange(c).view(1, c, 1)) * s).expand(
            n, c, t
        )
        rows = eval(kind.row, {"off": off, "N": n, "C": c, "S": s, "CG": c // 2})
        blocks = eager.block_rows(rows, axis, 2)
        count = eager.statistic_rows(axis, n, c, s, 2)
        assert blocks.shape[0] == count
        assert torch.equal(blocks, torch.arange(count).view(-1, 1).expand_as(blocks))


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_every_moment_kind_agrees_with_the_runtime(moment):
    """A moment from its mean and variance, as the kernels finish it (their Triton text,
    evaluated on tensors) and as the launcher does (eager.moment_of), is the moment."""
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    mean, var = x.mean(2), x.var(2, correction=0)
    direct = eager.moment(x, [2], moment)[..., 0]
    spec = MOMENTS[moment]
    text = spec.from_mean_var.format(mean="mean", var="var")
    triton_form = eval(text, {"mean": mean, "var": var})
    assert torch.allclose(triton_form, direct)
    assert torch.allclose(eager.moment_of(moment, mean, var), direct)
    # the adjoint rule is autograd's
    xg = x.clone().requires_grad_()
    dm = torch.randn(3, 4, dtype=torch.float64)
    (eager.moment(xg, [2], moment)[..., 0] * dm).sum().backward()
    text = spec.adjoint.format(dm="dm[..., None]", n="5", u="x", mean="mean[..., None]")
    rule = eval(text, {"dm": dm, "x": x, "mean": mean})
    assert torch.allclose(rule.expand_as(x), xg.grad)


def _ev(name, *values):
    args = [torch.tensor(v, dtype=torch.float64) for v in values]
    return ELEMENTWISE[name].eager(*args).item()


def test_documented_numerics_at_zero_and_for_negatives():
    assert math.isnan(_ev("log", 0.0))
    assert _ev("log", -math.e) == pytest.approx(-1.0)
    assert _ev("log", math.e) == pytest.approx(1.0)
    assert _ev("log", -1.0) == 0.0
    assert _ev("sqrt", -4.0) == -2.0
    assert _ev("sqrt", 9.0) == 3.0
    assert _ev("sqrt", 0.0) == 0.0
    assert _ev("sigmoid", 0.0) == 0.5
    assert _ev("tanh", -0.0) == 0.0
    assert _ev("exp", 0.0) == 1.0
    assert math.isinf(ELEMENTWISE["exp"].eager(torch.tensor(89.0)).item())  # float32 overflow
    assert _ev("div", 1.0, 0.0) == math.inf
    assert _ev("div", -1.0, 0.0) == -math.inf
    assert math.isnan(_ev("div", 0.0, 0.0))
    assert math.isnan(_ev("max", math.nan, 1.0)) and math.isnan(_ev("max", 1.0, math.nan))
    assert _ev("abs", -3.0) == 3.0 and _ev("square", -3.0) == 9.0 and _ev("neg", 2.0) == -2.0


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_max_of_signed_zeros_is_plus_zero_in_either_order(size):
    # torch.maximum alone returns either zero, depending on order and tensor size.
    minus, plus = torch.full((size,), -0.0), torch.zeros(size)
    for a, b in ((minus, plus), (plus, minus), (minus, minus)):
        assert not torch.signbit(ELEMENTWISE["max"].eager(a, b)).any()


def test_signed_sqrt_has_nan_gradient_at_zero():
    a = torch.tensor([0.0, 4.0, -4.0], dtype=torch.float64, requires_grad=True)
    ELEMENTWISE["sqrt"].eager(a).sum().backward()
    assert math.isnan(a.grad[0].item())
    assert a.grad[1].item() == pytest.approx(0.25) and a.grad[2].item() == pytest.approx(0.25)


@pytest.mark.parametrize("name", ["add", "mul", "max"])
def test_commutative_ops_commute_bitwise(name):
    a, b = torch.randn(100), torch.randn(100)
    assert torch.equal(ELEMENTWISE[name].eager(a, b), ELEMENTWISE[name].eager(b, a))
    assert ELEMENTWISE[name].commutative
    assert not ELEMENTWISE["div"].commutative


def _reference_dims(axis):
    return {"batch": (0, 2, 3), "instance": (2, 3), "layer": (1, 2, 3), "channel": (1,)}[axis]


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("moment", ["mean", "var", "meansq"])
def test_reduce_moment_matches_a_direct_reduction(axis, moment):
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3, 5, dtype=torch.float64)
    groups = 3
    got = reduce_moment(x, axis, groups, moment)
    if axis == "group":
        xg = x.reshape(4, groups, 2, 3, 5)
        fn = {
            "mean": lambda t: t.mean((2, 3, 4), keepdim=True),
            "var": lambda t: t.var((2, 3, 4), unbiased=False, keepdim=True),
            "meansq": lambda t: (t**2).mean((2, 3, 4), keepdim=True),
        }[moment]
        want = fn(xg).expand(4, groups, 2, 1, 1).reshape(4, 6, 1, 1)
    else:
        dims = _reference_dims(axis)
        want = {
            "mean": x.mean(dims, keepdim=True),
            "var": x.var(dims, unbiased=False, keepdim=True),
            "meansq": (x**2).mean(dims, keepdim=True),
        }[moment]
    torch.testing.assert_close(got, want)
    assert reduce_count(x.shape, axis, groups) * got.numel() == x.numel() * (
        6 // groups if axis == "group" else 1
    )


def test_instance_statistics_of_dense_tensors_reduce_nothing():
    nan_inf = torch.tensor([[math.nan, math.inf, 1.0]])
    assert torch.isnan(reduce_moment(nan_inf, "instance", 1, "var")[0, :2]).all()
    assert reduce_moment(nan_inf, "instance", 1, "var")[0, 2] == 0
    x = torch.randn(4, 6)
    assert torch.equal(reduce_moment(x, "instance", 1, "mean"), x)
    assert torch.equal(reduce_moment(x, "instance", 1, "var"), torch.zeros_like(x))
    assert reduce_count(x.shape, "instance", 1) == 1
    torch.testing.assert_close(
        STATISTICS["std"].eager(x, "instance", 1, 1e-5), torch.full_like(x, math.sqrt(1e-5))
    )


def test_variance_is_stable_under_a_large_offset():
    # E[x^2] - E[x]^2 would lose every digit of a unit variance at offset 1e4 in float32.
    torch.manual_seed(0)
    x = torch.randn(64, 8, 16, 16) + 1e4
    var = reduce_moment(x, "batch", 1, "var")
    want = x.double().var((0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(var.double(), want, rtol=1e-3, atol=0)


def test_statistic_values():
    x = torch.tensor([[[1.0, 3.0]], [[5.0, 7.0]]])  # (N=2, C=1, L=2)
    eps = 1e-5
    assert STATISTICS["mean"].eager(x, "batch", 1, eps).item() == 4.0
    assert STATISTICS["std"].eager(x, "batch", 1, eps).item() == pytest.approx(math.sqrt(5 + eps))
    assert STATISTICS["rms"].eager(x, "batch", 1, eps).item() == pytest.approx(math.sqrt(21 + eps))
    assert STATISTICS["std"].finish(torch.tensor(4.0), 0.0).item() == 2.0
    assert STATISTICS["mean"].finish(torch.tensor(-4.0), eps).item() == -4.0


@pytest.mark.parametrize(
    ("channels", "groups", "expected"),
    [(64, 32, 32), (48, 32, 24), (7, 32, 7), (30, 8, 6), (13, 8, 1), (1, 32, 1)],
)
def test_effective_groups_is_the_largest_divisor_not_above(channels, groups, expected):
    assert effective_groups(channels, groups) == expected


def test_effective_groups_refuses_zero():
    with pytest.raises(ValueError, match="groups must be >= 1"):
        effective_groups(8, 0)
