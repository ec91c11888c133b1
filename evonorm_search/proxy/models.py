"""The proxy networks: every normalization site uses the candidate layer.

Each architecture takes a *norm-act factory*, ``channels -> nn.Module``, and calls it at
every site where the original network has a normalization (with or without an
activation after it):

- ``resnet``: a pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual
  Networks"): in each basic block, before each 3x3 convolution; once more before the
  classifier.  The projection shortcut reads the first site's output, as in the paper.
- ``mobilenet``: MobileNetV2-style inverted residuals (Sandler et al. 2018): after the
  stem, after each block's 1x1 expansion and 3x3 depthwise convolution, after its 1x1
  projection, and after the 1x1 head.  The projection's site has no activation in the
  original (the "linear bottleneck"); here it is the candidate too, as the EvoNorm paper
  replaces every normalization, so a candidate that carries an activation adds one there.
- ``efficientnet``: EfficientNet-style MBConv blocks with squeeze-and-excitation (Tan & Le
  2019): the same sites as ``mobilenet``; squeeze-and-excitation keeps its own SiLU and
  sigmoid (it has no normalization).
- ``vit``: a pre-norm vision transformer (Dosovitskiy et al. 2021) for the ``sequence``
  space: the candidate replaces both LayerNorms of each block and the final one, applied
  to token tensors as (N, C, L).  Attention and the GELU MLP are unchanged.

Two presets: ``tiny`` (a quality check in seconds on a CPU) and ``paper`` (CIFAR-scale
widths, for GPUs).  Strides adapt to the input size so that every normalization site of
an 8x8 input (digits) still sees at least 2x2 positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ARCHITECTURES", "PRESETS", "TRANSFER_NETWORKS", "NormAct", "build"]

NormAct = Callable[[int], nn.Module]


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)


# ------------------------------------------------------------------ pre-activation ResNet


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm_act: NormAct) -> None:
        super().__init__()
        self.norm1 = norm_act(cin)
        self.conv1 = _conv(cin, cout, 3, stride)
        self.norm2 = norm_act(cout)
        self.conv2 = _conv(cout, cout, 3)
        self.shortcut = _conv(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm1(x)
        shortcut = x if self.shortcut is None else self.shortcut(out)
        return self.conv2(self.norm2(self.conv1(out))) + shortcut


class PreActResNet(nn.Module):
    def __init__(
        self,
        norm_act: NormAct,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        in_channels: int,
        num_classes: int,
        strides: tuple[int, ...],
        stem_stride: int,
    ) -> None:
        super().__init__()
        self.stem = _conv(in_channels, widths[0], 3, stem_stride)
        layers, cin = [], widths[0]
        for width, count, stride in zip(widths, blocks, strides, strict=True):
            for i in range(count):
                layers.append(PreActBlock(cin, width, stride if i == 0 else 1, norm_act))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.norm = norm_act(cin)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.blocks(self.stem(x))).mean(dim=(2, 3)))


# ------------------------------------------------------------------ MobileNetV2 / EfficientNet


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.expand(nn.functional.silu(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class InvertedResidual(nn.Module):
    """1x1 expansion -> k x k depthwise -> (squeeze-excite) -> 1x1 projection, each followed
    by a candidate site; a residual connection when the shape is kept."""

    def __init__(
        self,
        cin: int,
        cout: int,
        expand: int,
        stride: int,
        kernel: int,
        norm_act: NormAct,
        squeeze_excite: bool,
    ) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [_conv(cin, hidden, 1), norm_act(hidden)]
        layers += [_conv(hidden, hidden, kernel, stride, groups=hidden), norm_act(hidden)]
        if squeeze_excite:
            layers.append(SqueezeExcite(hidden, max(1, cin // 4)))
        layers += [_conv(hidden, cout, 1), norm_act(cout)]  # the "linear bottleneck" site
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class InvertedResidualNet(nn.Module):
    """stem -> inverted residual stages -> 1x1 head -> pool -> linear.  A stage is
    (expansion, channels, blocks, stride, kernel)."""

    def __init__(
        self,
        norm_act: NormAct,
        stem: int,
        stages: tuple[tuple[int, ...], ...],
        head: int,
        in_channels: int,
        num_classes: int,
        squeeze_excite: bool,
        stem_stride: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(in_channels, stem, 3, stem_stride), norm_act(stem)]
        cin = stem
        for expand, cout, count, stride, kernel in stages:
            for i in range(count):
                layers.append(
                    InvertedResidual(
                        cin, cout, expand, stride if i == 0 else 1, kernel, norm_act, squeeze_excite
                    )
                )
                cin = cout
        layers += [_conv(cin, head, 1), norm_act(head)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(head, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


# ------------------------------------------------------------------ vision transformer


class TokenNorm(nn.Module):
    """Applies a (N, C, L) layer to (N, L, C) tokens."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, tokens: Tensor) -> Tensor:
        return self.layer(tokens.transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, norm_act: NormAct) -> None:
        super().__init__()
        self.norm1 = TokenNorm(norm_act(dim))
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = TokenNorm(norm_act(dim))
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        norm_act: NormAct,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: int,
        patch: int,
        image_size: int,
        in_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        tokens = (image_size // patch) ** 2
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, norm_act) for _ in range(depth)])
        self.norm = TokenNorm(norm_act(dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


# ------------------------------------------------------------------ presets and the factory


@dataclass(frozen=True)
class _Preset:
    build: Callable[..., nn.Module]
    options: dict


PRESETS: dict[str, dict[str, _Preset]] = {
    "resnet": {
        "tiny": _Preset(PreActResNet, {"widths": (16, 32, 64), "blocks": (1, 1, 1)}),
        "paper": _Preset(PreActResNet, {"widths": (64, 128, 256, 512), "blocks": (2, 2, 2, 2)}),
    },
    "mobilenet": {
        "tiny": _Preset(
            InvertedResidualNet,
            {
                "stem": 16,
                "head": 128,
                "squeeze_excite": False,
                "stages": ((1, 16, 1, 1, 3), (4, 24, 1, 2, 3), (4, 32, 1, 2, 3)),
            },
        ),
        "paper": _Preset(
            InvertedResidualNet,
            {
                "stem": 32,
                "head": 1280,
                "squeeze_excite": False,
                "stages": (
                    (1, 16, 1, 1, 3),
                    (6, 24, 2, 1, 3),
                    (6, 32, 3, 2, 3),
                    (6, 64, 4, 2, 3),
                    (6, 96, 3, 1, 3),
                    (6, 160, 3, 2, 3),
                    (6, 320, 1, 1, 3),
                ),
            },
        ),
    },
    "efficientnet": {
        "tiny": _Preset(
            InvertedResidualNet,
            {
                "stem": 16,
                "head": 128,
                "squeeze_excite": True,
                "stages": ((1, 16, 1, 1, 3), (4, 24, 1, 2, 3), (4, 40, 1, 2, 5)),
            },
        ),
        "paper": _Preset(
            InvertedResidualNet,
            {
                "stem": 32,
                "head": 1280,
                "squeeze_excite": True,
                "stages": (
                    (1, 16, 1, 1, 3),
                    (6, 24, 2, 1, 3),
                    (6, 40, 2, 2, 5),
                    (6, 80, 3, 2, 3),
                    (6, 112, 3, 1, 5),
                    (6, 192, 4, 2, 5),
                    (6, 320, 1, 1, 3),
                ),
            },
        ),
    },
    "vit": {
        "tiny": _Preset(VisionTransformer, {"dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 2}),
        "paper": _Preset(VisionTransformer, {"dim": 192, "depth": 6, "heads": 3, "mlp_ratio": 4}),
    },
}
ARCHITECTURES = tuple(PRESETS)

# The transfer stage's networks: bigger than the proxies and at full resolution (no stem
# stride), one preset each.  ``resnet20``: a pre-activation ResNet-20 (He et al. 2016's CIFAR
# depth: 3 stages of 3 basic blocks, 16/32/64 channels; 19 sites); ``mobilenet_m``: a deeper,
# wider inverted-residual net (a second family); ``vit_d4``: a transformer of another depth
# and width than the sequence space's proxy.
TRANSFER_NETWORKS: dict[str, _Preset] = {
    "resnet20": _Preset(PreActResNet, {"widths": (16, 32, 64), "blocks": (3, 3, 3)}),
    "mobilenet_m": _Preset(
        InvertedResidualNet,
        {
            "stem": 32,
            "head": 256,
            "squeeze_excite": False,
            "stages": ((1, 16, 1, 1, 3), (4, 24, 2, 2, 3), (4, 32, 2, 2, 3), (4, 64, 2, 1, 3)),
        },
    ),
    "vit_d4": _Preset(VisionTransformer, {"dim": 96, "depth": 4, "heads": 4, "mlp_ratio": 2}),
}


def _stage_strides(count: int, image_size: int) -> tuple[int, ...]:
    """Stride 1 for the first stage, 2 for the others while the map stays >= 2x2 after."""
    strides, size = [1], image_size
    for _ in range(count - 1):
        stride = 2 if size // 2 >= 2 else 1
        strides.append(stride)
        size //= stride
    return tuple(strides)


def build(
    architecture: str,
    norm_act: NormAct,
    *,
    preset: str = "tiny",
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
) -> nn.Module:
    """The proxy network ``architecture`` at ``preset``, or the transfer network
    ``architecture`` (``TRANSFER_NETWORKS``; ``preset`` does not apply), with ``norm_act`` at
    every site."""
    if architecture in TRANSFER_NETWORKS:
        spec, stem_stride = TRANSFER_NETWORKS[architecture], 1
    elif architecture not in PRESETS:
        known = ", ".join((*PRESETS, *TRANSFER_NETWORKS))
        raise ValueError(f"unknown architecture {architecture!r} (known: {known})")
    elif preset not in PRESETS[architecture]:
        raise ValueError(f"unknown preset {preset!r} (known: tiny, paper)")
    else:
        spec = PRESETS[architecture][preset]
        # The tiny preset halves CIFAR-sized inputs in its stem, which keeps a quality check
        # within a minute on two CPU cores; every site still sees at least 4x4 positions.
        stem_stride = 2 if preset == "tiny" and image_size >= 32 else 1
    options = dict(spec.options, in_channels=in_channels, num_classes=num_classes)
    if spec.build is VisionTransformer:
        options.update(patch=4 if image_size >= 16 else 2, image_size=image_size)
        model = spec.build(norm_act, **options)
        _initialise(model)
        return model
    size = image_size // stem_stride
    options["stem_stride"] = stem_stride
    if spec.build is PreActResNet:
        options["strides"] = _stage_strides(len(options["widths"]), size)
    else:  # stage strides adapted to the input, keeping the other settings
        strides = iter(_stage_strides(sum(1 for s in options["stages"] if s[3] != 1) + 1, size)[1:])
        options["stages"] = tuple(
            (e, c, n, next(strides) if s != 1 else 1, k) for e, c, n, s, k in options["stages"]
        )
    model = spec.build(norm_act, **options)
    _initialise(model)
    return model


def _initialise(model: nn.Module) -> None:
    """He initialisation for convolutions, small normal weights for linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
