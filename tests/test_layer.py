import copy
import io
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from evonorm_search import GraphError, GraphNormAct, LayerGraph, baselines
from evonorm_search.layer import evaluate_graph

from strategies import layers, reorder

ALL_BATCH_KINDS = "(x - mean_batch(x)) / std_batch(x) + x / rms_batch(x * v1)"


def test_parameters_buffers_and_attributes():
    layer = GraphNormAct(ALL_BATCH_KINDS, 10, groups=4, eps=1e-3, momentum=0.2)
    params = dict(layer.named_parameters())
    assert set(params) == {"v0", "v1", "weight", "bias"}
    assert all(p.shape == (10,) for p in params.values())
    assert torch.equal(layer.v0, torch.zeros(10)) and torch.equal(layer.v1, torch.ones(10))
    assert torch.equal(layer.weight, torch.ones(10)) and torch.equal(layer.bias, torch.zeros(10))
    buffers = dict(layer.named_buffers())
    kinds = sorted(name.rsplit("_", 1)[0] for name in buffers)
    assert kinds == ["running_mean", "running_ms", "running_var"]
    for name, buffer in buffers.items():
        assert torch.equal(buffer, torch.full((10,), 0.0 if "mean" in name else 1.0))
    assert (layer.groups, layer.eps, layer.momentum) == (2, 1e-3, 0.2)  # 2 divides 10, 4 not
    assert layer.num_channels == 10 and layer.backend == "auto"


def test_no_affine():
    layer = GraphNormAct("max(x, 0)", 4, affine=False)
    assert set(dict(layer.named_parameters())) == {"v0", "v1"}
    assert layer.weight is None and layer.bias is None
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(layer(x), torch.relu(x))


def test_running_estimates_follow_batchnorm_semantics():
    layer = GraphNormAct(ALL_BATCH_KINDS, 3, momentum=0.25)
    with torch.no_grad():
        layer.v1.copy_(torch.tensor([0.5, 2.0, -1.0]))
    x = torch.randn(5, 3, 4, 2, dtype=torch.float32) * 2 + 1
    layer(x)
    n = 5 * 4 * 2
    dims = (0, 2, 3)
    m = 0.25
    buffers = dict(layer.named_buffers())
    (mean_name,) = [k for k in buffers if k.startswith("running_mean")]
    (var_name,) = [k for k in buffers if k.startswith("running_var")]
    (ms_name,) = [k for k in buffers if k.startswith("running_ms")]
    torch.testing.assert_close(buffers[mean_name], m * x.mean(dims))
    torch.testing.assert_close(
        buffers[var_name], (1 - m) + m * x.var(dims, unbiased=False) * n / (n - 1)
    )
    xv = x * layer.v1.detach().view(1, 3, 1, 1)  # rms_batch keeps its own input's mean square
    torch.testing.assert_close(buffers[ms_name], (1 - m) + m * (xv**2).mean(dims))

    layer.eval()
    y = layer(x)
    view = (1, 3, 1, 1)
    expected = (x - buffers[mean_name].view(view)) / (
        buffers[var_name].view(view) + 1e-5
    ).sqrt() + x / (buffers[ms_name].view(view) + 1e-5).sqrt()
    torch.testing.assert_close(y, expected)
    before = {k: v.clone() for k, v in layer.named_buffers()}
    layer(x * 3)
    assert all(torch.equal(before[k], v) for k, v in layer.named_buffers())  # eval never updates


def test_batch_of_one_value_per_channel_refused_in_training_only():
    layer = GraphNormAct(baselines.get("bn_relu"), 4)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 4))
    layer.eval()
    assert layer(torch.randn(1, 4)).shape == (1, 4)


@pytest.mark.parametrize("shape", [(6, 8), (6, 8, 5), (6, 8, 5, 4), (3, 8, 2, 3, 4)])
@pytest.mark.parametrize("name", baselines.names())
def test_any_spatial_rank(name, shape):
    layer = GraphNormAct(baselines.get(name), 8, groups=4)
    x = torch.randn(shape, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().sum().backward()
    assert x.grad.shape == x.shape
    layer.eval()
    assert layer(x).shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    layer = GraphNormAct(baselines.get("evonorm_b0"), 8)
    x = (torch.randn(4, 8, 6, 6) * 3).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    reference = GraphNormAct(baselines.get("evonorm_b0"), 8)
    assert torch.equal(y, reference(x.float()).to(dtype))  # same float32 computation, one cast
    half_module = copy.deepcopy(layer).to(dtype)  # parameters in bf16/fp16 work too
    assert half_module(x).dtype == dtype


@pytest.mark.parametrize("name", ["bn_relu", "evonorm_b0", "evonorm_s0", "layernorm"])
def test_float64_gradcheck(name):
    layer = GraphNormAct(baselines.get(name), 4, groups=2, dtype=torch.float64)
    with torch.no_grad():
        layer.v1.copy_(torch.tensor([0.7, -0.4, 1.3, 0.2], dtype=torch.float64))
        layer.v0.copy_(torch.tensor([0.1, -0.2, 0.3, 0.05], dtype=torch.float64))
    x = torch.randn(3, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    params = (layer.v0, layer.v1, layer.weight, layer.bias)

    def fn(x, v0, v1, weight, bias):
        return torch.func.functional_call(
            layer, {"v0": v0, "v1": v1, "weight": weight, "bias": bias}, (x,)
        )

    assert torch.autograd.gradcheck(fn, (x, *params))


def test_parameters_no_node_reads_get_no_gradient():
    layer = GraphNormAct(baselines.get("evonorm_s0"), 4)  # reads v1, never v0
    layer(torch.randn(2, 4, 3, 3)).sum().backward()
    assert layer.v0.grad is None
    assert layer.v1.grad is not None and layer.weight.grad is not None


def test_state_dict_round_trip():
    a = GraphNormAct(ALL_BATCH_KINDS, 6)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p))
    for _ in range(3):
        a(torch.randn(4, 6, 3, 3))
    b = GraphNormAct(ALL_BATCH_KINDS, 6)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 6, 3, 3)
    a.eval()
    b.eval()
    assert torch.equal(a(x), b(x))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    c = GraphNormAct(ALL_BATCH_KINDS, 6).eval()
    c.load_state_dict(torch.load(buffer))
    assert torch.equal(a(x), c(x))


@given(layers(max_nodes=6), st.randoms(use_true_random=False))
def test_equivalent_genomes_share_state_dict_keys_and_outputs(g, rng):
    a, b = GraphNormAct(g, 4, groups=2), GraphNormAct(reorder(g, rng), 4, groups=2)
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4, 2, 3)
    torch.testing.assert_close(a(x), b(x), equal_nan=True)


def test_genome_is_kept_and_canonical_program_runs():
    genome = LayerGraph.from_json(
        {
            "format": "evonorm-graph/1",
            "nodes": [
                {"op": "exp", "inputs": [0]},  # dead
                {"op": "mul", "inputs": [3, 0]},
                {"op": "max", "inputs": [5, 1]},
            ],
        }
    )
    layer = GraphNormAct(genome, 3)
    assert layer.graph is genome
    assert len(layer.program) == 2
    assert "formula='max(x * v1, 0)'" in repr(layer)
    assert "groups=3" in layer.extra_repr()


def test_matches_evaluate_graph():
    g = baselines.get("evonorm_s0")
    layer = GraphNormAct(g, 8, groups=4, affine=False)
    x = torch.randn(2, 8, 4, 4)
    expected = evaluate_graph(g.canonical(), x, layer.v0, layer.v1, groups=4, eps=1e-5)[-1]
    assert torch.equal(layer(x), expected)


def test_ieee_numerics_pass_through():
    layer = GraphNormAct("log(x) * v1", 2)
    y = layer(torch.tensor([[0.0, -math.e]]))
    assert math.isnan(y[0, 0].item()) and y[0, 1].item() == pytest.approx(-1.0)


def test_pickle_and_deepcopy():
    layer = GraphNormAct(baselines.get("bn_relu"), 4)
    layer(torch.randn(3, 4, 2, 2))
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    clone = copy.deepcopy(layer)
    x = torch.randn(3, 4, 2, 2)
    for other in (loaded, clone):
        other.eval()
    layer.eval()
    assert torch.equal(loaded(x), layer(x)) and torch.equal(clone(x), layer(x))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"graph": "mean_batch(x)"}, GraphError, "must vary like x"),
        ({"graph": "x ** 2"}, GraphError, "operator Pow"),
        ({"num_channels": 0}, ValueError, "num_channels must be a positive int"),
        ({"num_channels": 2.0}, ValueError, "num_channels must be a positive int"),
        ({"num_channels": True}, ValueError, "num_channels must be a positive int"),
        ({"momentum": None}, ValueError, "momentum must be a number in"),
        ({"eps": "1e-5"}, ValueError, "eps must be a number > 0"),
        ({"eps": 0.0}, ValueError, "eps must be a number > 0"),
        ({"momentum": 1.5}, ValueError, "momentum must be a number in"),
        ({"groups": 0}, ValueError, "groups must be >= 1"),
        ({"backend": "cuda"}, ValueError, "unknown backend 'cuda' .available: auto, eager, tri"),
    ],
)
def test_constructor_errors(kwargs, error, message):
    args = {"graph": "max(x, 0)", "num_channels": 4, **kwargs}
    with pytest.raises(error, match=message):
        GraphNormAct(args.pop("graph"), args.pop("num_channels"), **args)


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 4, 0, 3)])
def test_empty_batches_pass_through_as_in_batchnorm(shape):
    layer = GraphNormAct(baselines.get("bn_relu"), 4)
    bn = torch.nn.BatchNorm2d(4)
    x = torch.randn(shape)
    assert layer(x).shape == bn(x).shape == shape
    assert torch.equal(layer.running_mean_4, bn.running_mean)  # untouched, no NaN
    assert torch.equal(layer.running_var_7, bn.running_var)


def test_channels_last_input():
    layer = GraphNormAct(baselines.get("evonorm_b0"), 8)
    x = torch.randn(4, 8, 5, 5)
    expected = layer(x)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), expected)


def test_integer_inputs_are_refused():
    with pytest.raises(TypeError, match=r"expected a floating-point input, got torch\.int64"):
        GraphNormAct("max(x, 0)", 3)(torch.ones(2, 3, dtype=torch.int64))


def test_numpy_integer_channels():
    import numpy as np

    assert GraphNormAct("max(x, 0)", np.int64(3)).num_channels == 3


@pytest.mark.parametrize("shape", [(4,), (2, 5, 3)])
def test_input_shape_errors(shape):
    layer = GraphNormAct("max(x, 0)", 4)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 4, \*spatial\)"):
        layer(torch.randn(shape))


def test_factory_kwargs():
    layer = GraphNormAct(baselines.get("bn_relu"), 4, dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in [*layer.parameters(), *layer.buffers()])
    y = layer(torch.randn(3, 4, dtype=torch.float64))
    assert y.dtype == torch.float64


@pytest.mark.parametrize("name", baselines.names())
def test_traces_into_one_graph_for_torch_compile(name):
    # Graph breaks would split a compiled layer into pieces that run op by op.
    layer = GraphNormAct(baselines.get(name), 8, groups=4)
    explanation = torch._dynamo.explain(layer)(torch.randn(4, 8, 3, 3, requires_grad=True))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
