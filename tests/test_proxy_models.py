import pytest
import torch

from evonorm_search import GraphNormAct, baselines
from evonorm_search.proxy.models import ARCHITECTURES, TRANSFER_NETWORKS, build

IMAGE_LAYERS = [n for n in baselines.names() if baselines.describe(n).tensor in ("image", "any")]
TOKEN_LAYERS = ["layernorm", "rmsnorm", "dyt", "ln_relu"]
SITES = {"resnet": 7, "mobilenet": 10, "efficientnet": 10, "vit": 5}  # tiny preset
TRANSFER_SITES = {"resnet20": 19, "mobilenet_m": 22, "vit_d4": 9}


def factory(name: str):
    graph = baselines.get(name)
    return lambda c: GraphNormAct(graph, c, groups=8)


@pytest.mark.parametrize("architecture", ["resnet", "mobilenet", "efficientnet"])
@pytest.mark.parametrize("layer", IMAGE_LAYERS)
def test_convolutional_proxies_run_every_image_layer(architecture, layer):
    for size, channels in ((32, 3), (8, 1)):  # CIFAR-10 and digits
        model = build(architecture, factory(layer), in_channels=channels, image_size=size)
        x = torch.randn(4, channels, size, size, requires_grad=True)
        out = model(x)
        assert out.shape == (4, 10)
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("layer", TOKEN_LAYERS)
def test_the_transformer_runs_token_layers(layer):
    for size, channels in ((32, 3), (8, 1)):
        model = build("vit", factory(layer), in_channels=channels, image_size=size)
        out = model(torch.randn(4, channels, size, size))
        assert out.shape == (4, 10)
        out.sum().backward()
        sites = [m for m in model.modules() if isinstance(m, GraphNormAct)]
        assert all(site.v1.grad is not None for site in sites)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_site_is_the_candidate_and_sees_at_least_2x2(architecture):
    for size, channels in ((32, 3), (8, 1)):
        layer = "layernorm" if architecture == "vit" else "bn_relu"
        model = build(architecture, factory(layer), in_channels=channels, image_size=size)
        shapes = []
        for m in model.modules():
            if isinstance(m, GraphNormAct):
                m.register_forward_hook(
                    lambda _m, args, _o, seen=shapes: seen.append(args[0].shape)
                )
        model(torch.randn(2, channels, size, size))
        assert len(shapes) == SITES[architecture]
        if architecture != "vit":
            assert all(s[2] >= 2 and s[3] >= 2 for s in shapes), shapes
        else:
            assert all(len(s) == 3 for s in shapes)  # tokens as (N, C, L)
        # No native normalization is left behind.
        assert not any(
            isinstance(m, torch.nn.modules.batchnorm._NormBase | torch.nn.LayerNorm)
            for m in model.modules()
        )


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_paper_presets_build_and_run(architecture):
    layer = "layernorm" if architecture == "vit" else "bn_relu"
    model = build(architecture, factory(layer), preset="paper")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    tiny = build(architecture, factory(layer), preset="tiny")
    assert sum(p.numel() for p in model.parameters()) > 5 * sum(
        p.numel() for p in tiny.parameters()
    )


def test_unknown_architecture_or_preset():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        build("vgg", factory("bn_relu"))
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build("resnet", factory("bn_relu"), preset="huge")


@pytest.mark.parametrize("network", TRANSFER_NETWORKS)
def test_transfer_networks_are_bigger_full_resolution_and_replace_every_site(network):
    """Every site takes the candidate, the first at the input's full resolution, and the
    network has more sites and parameters than any proxy of its family."""
    from evonorm_search.space import TRANSFER_NETWORK_TENSORS

    token = TRANSFER_NETWORK_TENSORS[network] == "sequence"
    layer = "layernorm" if token else "bn_relu"
    model = build(network, factory(layer), image_size=32)
    shapes = []
    for m in model.modules():
        if isinstance(m, GraphNormAct):
            m.register_forward_hook(lambda _m, args, _o, seen=shapes: seen.append(args[0].shape))
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 10) and len(shapes) == TRANSFER_SITES[network]
    if not token:
        assert shapes[0][2:] == (32, 32)  # no stem stride
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._NormBase | torch.nn.LayerNorm)
        for m in model.modules()
    )
    proxy = build("vit" if token else "resnet", factory(layer), image_size=32)
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in proxy.parameters())
    digits = build(network, factory(layer), in_channels=1, image_size=8)  # the tests' size
    assert digits(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_the_catalog_names_what_the_builders_build():
    """The space validates against ``catalog`` (torch-free); the proxy builds: they agree."""
    from evonorm_search import catalog
    from evonorm_search.proxy.data import load_dataset
    from evonorm_search.proxy.models import PRESETS

    assert tuple(catalog.PROXY_ARCHITECTURES) == ARCHITECTURES
    assert all(tuple(PRESETS[a]) == catalog.PRESETS for a in ARCHITECTURES)
    assert set(catalog.TRANSFER_NETWORK_TENSORS) == set(TRANSFER_NETWORKS)
    tensors = {**catalog.PROXY_ARCHITECTURES, **catalog.TRANSFER_NETWORK_TENSORS}
    for name, tensor in tensors.items():  # the transformers take tokens, (N, C, L)
        assert tensor == ("sequence" if name.startswith("vit") else "image"), name
    for networks in catalog.DEFAULT_TRANSFER_NETWORKS.values():
        assert set(networks) <= set(TRANSFER_NETWORKS)
    with pytest.raises(Exception, match=", ".join(catalog.DATASETS)):
        load_dataset("imagenet")
