"""The names of what the proxy stage can build, stated once and without torch.

The space validates a TOML file against these names (``space`` sits below ``proxy`` and
must not import it); ``proxy.models`` and ``proxy.data`` build what they name, and a test
asserts that the builders and this catalog agree.
"""

from __future__ import annotations

__all__ = [
    "DATASETS",
    "DEFAULT_TRANSFER_NETWORKS",
    "PRESETS",
    "PROXY_ARCHITECTURES",
    "TRANSFER_NETWORK_TENSORS",
]

# Each proxy network takes one kind of tensor at its normalization sites.
PROXY_ARCHITECTURES = {
    "resnet": "image",
    "mobilenet": "image",
    "efficientnet": "image",
    "vit": "sequence",
}
# Every proxy network comes in these sizes (``proxy.models.PRESETS``).
PRESETS = ("tiny", "paper")
# The transfer stage's networks (``proxy.models.TRANSFER_NETWORKS``), with the tensor each
# takes, and the default for a space of each tensor kind.
TRANSFER_NETWORK_TENSORS = {"resnet20": "image", "mobilenet_m": "image", "vit_d4": "sequence"}
DEFAULT_TRANSFER_NETWORKS = {"image": ("resnet20",), "sequence": ("vit_d4",)}
# ``proxy.data.load_dataset``'s names.
DATASETS = ("cifar10", "digits", "synthetic")
