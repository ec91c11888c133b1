"""Every baseline equals its PyTorch counterpart or the paper's formula, to 1e-5 in float32,
in training mode over several steps (running statistics included) and then in eval mode."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evonorm_search import GraphError, GraphNormAct, baselines

TOL = {"rtol": 1e-5, "atol": 1e-5}
STEPS = 4
REQUIRED = {
    "relu",
    "bn_relu",
    "gn_relu",
    "in_relu",
    "ln_relu",
    "evonorm_b0",
    "evonorm_s0",
    "layernorm",
    "rmsnorm",
    "dyt",
    "derf",
}


def batches(shape, steps=STEPS, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Per-channel offset and scale, so that statistics matter.
    c = shape[1]
    view = (1, c, *[1] * (len(shape) - 2))
    offset = torch.randn(c, generator=g).view(view) * 2
    scale = torch.rand(c, generator=g).view(view) * 3 + 0.5
    return [torch.randn(shape, generator=g) * scale + offset for _ in range(steps)]


def randomise(layer: GraphNormAct, seed=1):
    """Non-trivial v0/v1 and affine, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (layer.v0, layer.v1, layer.weight, layer.bias):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p is not layer.v0 else 0.0))


def tie_affine(layer: GraphNormAct, module: nn.Module) -> None:
    """Give ``module`` a random affine and copy it into the layer's v1 (scale), v0 (shift)."""
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        layer.v1.copy_(module.weight)
        if getattr(module, "bias", None) is not None:
            module.bias.uniform_(-0.5, 0.5)
            layer.v0.copy_(module.bias)


def per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.view(1, -1, *[1] * (ndim - 2))


def check_train_then_eval(layer, reference, reference_modules, shape):
    """``reference(x)`` is the expected output of ``layer(x)``."""
    for x in batches(shape):
        torch.testing.assert_close(layer(x), reference(x), **TOL)
    layer.eval()
    for m in reference_modules:
        m.eval()
    for x in batches(shape, seed=7):
        torch.testing.assert_close(layer(x), reference(x), **TOL)


def test_zoo_names_and_validity():
    assert set(baselines.names()) >= REQUIRED
    for name in baselines.names():
        g = baselines.get(name)
        assert g.validate() is g
        assert baselines.describe(name).formula == g.formula()
    assert baselines.get("BN-ReLU") is baselines.get("bn_relu")
    with pytest.raises(GraphError, match="unknown baseline 'nope'"):
        baselines.describe("nope")


@pytest.mark.parametrize("shape", [(8, 6, 5, 4), (16, 6), (8, 6, 7)])
def test_bn_relu_equals_batchnorm_relu(shape):
    c = shape[1]
    bn = {4: nn.BatchNorm2d, 2: nn.BatchNorm1d, 3: nn.BatchNorm1d}[len(shape)](c)
    layer = GraphNormAct(baselines.get("bn_relu"), c)
    tie_affine(layer, bn)
    buffers = {k: v for k, v in layer.state_dict().items() if k.startswith("running")}
    assert set(buffers) == {"running_mean_4", "running_var_7"}

    for x in batches(shape):
        torch.testing.assert_close(layer(x), F.relu(bn(x)), **TOL)
    torch.testing.assert_close(layer.running_mean_4, bn.running_mean, **TOL)
    torch.testing.assert_close(layer.running_var_7, bn.running_var, **TOL)
    layer.eval()
    bn.eval()
    for x in batches(shape, seed=7):
        torch.testing.assert_close(layer(x), F.relu(bn(x)), **TOL)


def test_bn_relu_gradients_equal_batchnorm():
    c, shape = 6, (8, 6, 5, 4)
    bn = nn.BatchNorm2d(c)
    layer = GraphNormAct(baselines.get("bn_relu"), c)
    x = batches(shape)[0]
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    upstream = torch.randn(shape)
    (layer(xa) * upstream).sum().backward()
    (F.relu(bn(xb)) * upstream).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)
    torch.testing.assert_close(layer.v1.grad, bn.weight.grad, **TOL)
    torch.testing.assert_close(layer.v0.grad, bn.bias.grad, **TOL)


@pytest.mark.parametrize(
    ("channels", "groups", "used", "spatial"),
    [
        (12, 4, 4, (5, 4)),
        (12, 32, 12, (5, 4)),
        (48, 32, 24, (5, 4)),
        (12, 4, 4, (7,)),
        (12, 4, 4, ()),
    ],  # dense with 12 groups would normalise single elements: 0 / sqrt(eps)
)
def test_gn_relu_equals_group_norm_relu(channels, groups, used, spatial):
    shape = (4, channels, *spatial)
    layer = GraphNormAct(baselines.get("gn_relu"), channels, groups=groups)
    assert layer.groups == used
    randomise(layer)
    nd = len(shape)

    def reference(x):
        y = F.relu(F.group_norm(x, used, layer.v1, layer.v0, eps=1e-5))
        return y * per_channel(layer.weight, nd) + per_channel(layer.bias, nd)

    with torch.no_grad():
        check_train_then_eval(layer, reference, [], shape)


@pytest.mark.parametrize("shape", [(4, 6, 5, 4), (4, 6, 9)])
def test_in_relu_equals_instance_norm_relu(shape):
    c = shape[1]
    inorm = (nn.InstanceNorm2d if len(shape) == 4 else nn.InstanceNorm1d)(c, affine=True)
    layer = GraphNormAct(baselines.get("in_relu"), c)
    tie_affine(layer, inorm)
    with torch.no_grad():
        check_train_then_eval(layer, lambda x: F.relu(inorm(x)), [inorm], shape)


def test_ln_relu_equals_layer_norm_over_chw_relu():
    shape = (4, 6, 5, 4)
    layer = GraphNormAct(baselines.get("ln_relu"), 6)
    randomise(layer)

    def reference(x):
        y = F.layer_norm(x, x.shape[1:], eps=1e-5)
        y = F.relu(y * per_channel(layer.v1, 4) + per_channel(layer.v0, 4))
        return y * per_channel(layer.weight, 4) + per_channel(layer.bias, 4)

    with torch.no_grad():
        check_train_then_eval(layer, reference, [], shape)


def tokens_through(layer, tokens):
    """Apply a channel-axis layer to (N, L, C) tokens via the (N, C, L) layout."""
    return layer(tokens.transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize(
    ("name", "make_module"),
    [
        ("layernorm", lambda c: nn.LayerNorm(c, eps=1e-5)),
        ("rmsnorm", lambda c: nn.RMSNorm(c, eps=1e-5)),
    ],
)
def test_token_norms_equal_their_torch_modules(name, make_module):
    n, length, c = 4, 9, 16
    module = make_module(c)
    layer = GraphNormAct(baselines.get(name), c)
    tie_affine(layer, module)
    with torch.no_grad():
        for tokens in batches((n, length, c)):
            torch.testing.assert_close(tokens_through(layer, tokens), module(tokens), **TOL)
        layer.eval()
        for tokens in batches((n, length, c), seed=7):
            torch.testing.assert_close(tokens_through(layer, tokens), module(tokens), **TOL)


def test_dyt_equals_dynamic_tanh():
    n, length, c = 4, 9, 16
    layer = GraphNormAct(baselines.get("dyt"), c)
    randomise(layer)
    alpha, gamma, beta = layer.v1, layer.weight, layer.bias  # alpha per channel
    with torch.no_grad():
        for tokens in batches((n, length, c)):
            torch.testing.assert_close(
                tokens_through(layer, tokens), gamma * torch.tanh(alpha * tokens) + beta, **TOL
            )


def test_derf_equals_dynamic_erf():
    n, length, c = 4, 9, 16
    layer = GraphNormAct(baselines.get("derf"), c)
    randomise(layer)
    alpha, shift, gamma, beta = layer.v1, layer.v0, layer.weight, layer.bias  # per channel
    with torch.no_grad():
        for tokens in batches((n, length, c)):
            expected = gamma * torch.erf(alpha * tokens + shift) + beta
            torch.testing.assert_close(tokens_through(layer, tokens), expected, **TOL)


def test_relu_is_relu():
    layer = GraphNormAct(baselines.get("relu"), 6)
    x = batches((4, 6, 3, 3))[0]
    torch.testing.assert_close(layer(x), F.relu(x), rtol=0, atol=0)


class PaperEvoNormB0:
    """EvoNorm-B0 as the paper writes it (Liu et al. 2020, Figure 5 / Appendix A):
    x / max(sqrt(s^2_b(x) + eps), v1 * x + sqrt(s^2_w,h(x) + eps)) * gamma + beta, with a
    moving average of the batch variance (unbiased, as BatchNorm) in inference."""

    def __init__(self, layer: GraphNormAct):
        self.layer = layer
        self.running_var = torch.ones(layer.num_channels)

    def __call__(self, x, training):
        m, eps, nd = self.layer.momentum, self.layer.eps, x.dim()
        if training:
            var = x.var(dim=(0, 2, 3), unbiased=False)
            n = x.numel() / x.shape[1]
            self.running_var = (1 - m) * self.running_var + m * var * n / (n - 1)
        else:
            var = self.running_var
        batch_std = per_channel((var + eps).sqrt(), nd)
        instance_std = (x.var(dim=(2, 3), unbiased=False, keepdim=True) + eps).sqrt()
        y = x / torch.maximum(batch_std, per_channel(self.layer.v1, nd) * x + instance_std)
        return y * per_channel(self.layer.weight, nd) + per_channel(self.layer.bias, nd)


def test_evonorm_b0_equals_the_paper_with_moving_variance():
    shape = (8, 6, 5, 4)
    layer = GraphNormAct(baselines.get("evonorm_b0"), 6)
    randomise(layer)
    ref = PaperEvoNormB0(layer)
    with torch.no_grad():
        for x in batches(shape):
            torch.testing.assert_close(layer(x), ref(x, training=True), **TOL)
        (buffer_name,) = [k for k in layer.state_dict() if k.startswith("running")]
        assert buffer_name.startswith("running_var_")
        torch.testing.assert_close(getattr(layer, buffer_name), ref.running_var, **TOL)
        layer.eval()
        for x in batches(shape, seed=7):
            torch.testing.assert_close(layer(x), ref(x, training=False), **TOL)


@pytest.mark.parametrize(("channels", "used_groups"), [(64, 32), (48, 24), (8, 8)])
def test_evonorm_s0_equals_the_paper(channels, used_groups):
    shape = (4, channels, 5, 4)
    layer = GraphNormAct(baselines.get("evonorm_s0"), channels)  # groups=32 default
    assert layer.groups == used_groups
    randomise(layer)

    def reference(x):  # x * sigmoid(v1 * x) / sqrt(s^2_{w,h,c/g}(x) + eps) * gamma + beta
        n = x.shape[0]
        grouped = x.reshape(n, used_groups, -1)
        var = grouped.var(dim=-1, unbiased=False, keepdim=True)
        std = (var + layer.eps).sqrt().expand_as(grouped).reshape(x.shape)
        y = x * torch.sigmoid(per_channel(layer.v1, 4) * x) / std
        return y * per_channel(layer.weight, 4) + per_channel(layer.bias, 4)

    with torch.no_grad():
        check_train_then_eval(layer, reference, [], shape)
