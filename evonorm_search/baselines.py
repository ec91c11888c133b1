"""Known normalization-activation layers written as LayerGraphs.

In every baseline ``v1`` scales and ``v0`` shifts where the original layer has a learnable
scale and shift; GraphNormAct's own affine (``weight``, ``bias``) follows, starting at the
identity.  The tests prove each baseline equal to its PyTorch counterpart or paper formula.

``dyt`` is Dynamic Tanh ("Transformers without Normalization", Zhu et al. 2025):
``gamma * tanh(alpha * x) + beta``.  Here ``alpha`` is ``v1``, one per channel and
initialised to 1, where the paper has one scalar initialised to 0.5; ``gamma`` and
``beta`` are the layer's ``weight`` and ``bias``.  ``derf`` is Dynamic erf ("Stronger
Normalization-Free Transformers", Chen et al. 2025): ``gamma * erf(alpha * x + s) + beta``,
with ``alpha`` (``v1``) and ``s`` (``v0``) per channel where the paper has scalars.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from evonorm_search.errors import GraphError
from evonorm_search.graph import LayerGraph

__all__ = ["Baseline", "describe", "get", "names"]


@dataclass(frozen=True)
class Baseline:
    name: str
    formula: str
    tensor: str  # "image", "sequence" or "any": the tensors it is meant for
    description: str


_ZOO = (
    Baseline("relu", "max(x, 0)", "any", "ReLU without normalization"),
    Baseline(
        "bn_relu",
        "max((x - mean_batch(x)) / std_batch(x) * v1 + v0, 0)",
        "image",
        "BatchNorm + ReLU (Ioffe & Szegedy 2015)",
    ),
    Baseline(
        "gn_relu",
        "max((x - mean_group(x)) / std_group(x) * v1 + v0, 0)",
        "image",
        "GroupNorm + ReLU (Wu & He 2018)",
    ),
    Baseline(
        "in_relu",
        "max((x - mean_instance(x)) / std_instance(x) * v1 + v0, 0)",
        "image",
        "InstanceNorm + ReLU (Ulyanov et al. 2016)",
    ),
    Baseline(
        "ln_relu",
        "max((x - mean_layer(x)) / std_layer(x) * v1 + v0, 0)",
        "image",
        "LayerNorm over (C, H, W) with per-channel affine + ReLU (Ba et al. 2016)",
    ),
    Baseline(
        "evonorm_b0",
        "x / max(std_batch(x), v1 * x + std_instance(x))",
        "image",
        "EvoNorm-B0 (Liu et al. 2020)",
    ),
    Baseline(
        "evonorm_s0", "x * sigmoid(v1 * x) / std_group(x)", "image", "EvoNorm-S0 (Liu et al. 2020)"
    ),
    Baseline(
        "layernorm",
        "(x - mean_channel(x)) / std_channel(x) * v1 + v0",
        "sequence",
        "transformer LayerNorm over the features of each token",
    ),
    Baseline(
        "rmsnorm",
        "x / rms_channel(x) * v1",
        "sequence",
        "RMSNorm over the features of each token (Zhang & Sennrich 2019)",
    ),
    Baseline(
        "dyt", "tanh(v1 * x)", "sequence", "Dynamic Tanh, alpha per channel (Zhu et al. 2025)"
    ),
    Baseline(
        "derf",
        "erf(v1 * x + v0)",
        "sequence",
        "Dynamic erf, alpha and shift per channel (Chen et al. 2025)",
    ),
)
_BY_NAME = {b.name: b for b in _ZOO}


def names() -> list[str]:
    """Names of every baseline, in the zoo's order."""
    return list(_BY_NAME)


def describe(name: str) -> Baseline:
    """The zoo entry for ``name`` (case and ``-``/``_`` insensitive)."""
    key = name.strip().lower().replace("-", "_")
    if key not in _BY_NAME:
        raise GraphError(f"unknown baseline {name!r} (available: {', '.join(_BY_NAME)})")
    return _BY_NAME[key]


def get(name: str) -> LayerGraph:
    """The baseline's LayerGraph (``name`` as in :func:`describe`)."""
    return _parse(describe(name).name)


@cache
def _parse(name: str) -> LayerGraph:
    return LayerGraph.parse(_BY_NAME[name].formula)
