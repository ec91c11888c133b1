"""A small ResNet with an exported layer in place of BatchNorm2d + ReLU.

    evonorm-search export ID -o evolved.py --kernels
    python examples/resnet.py evolved.py

Trains the same ResNet twice on scikit-learn's handwritten digits (8x8 images), once with
BatchNorm2d + ReLU after every convolution and once with the exported layer, from the same
initial weights and batches, and prints each one's validation accuracy and time per step.
On a CUDA device the exported layer runs its fused Triton kernels (where triton is
installed); elsewhere the same computation in PyTorch ops.  The exported file needs only
torch; this script also needs scikit-learn for the data.
"""

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

NormAct = Callable[[int], nn.Module]


def bn_relu(channels: int) -> nn.Module:
    """What the exported layer replaces."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())


class Block(nn.Module):
    """A residual block: two 3x3 convolutions, each followed by a normalization-activation."""

    def __init__(self, channels: int, norm_act: NormAct) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm_act1 = norm_act(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm_act2 = norm_act(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm_act2(self.conv2(self.norm_act1(self.conv1(x))))


def resnet(norm_act: NormAct, width: int = 32, blocks: int = 2, classes: int = 10) -> nn.Module:
    """A stem, ``blocks`` residual blocks and a linear head; ``norm_act(C)`` builds every
    normalization-activation layer."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False),
        norm_act(width),
        *[Block(width, norm_act) for _ in range(blocks)],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, classes),
    )


def load_class(path: Path, class_name: str) -> type[nn.Module]:
    """``class_name`` from the exported file at ``path``, imported as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return getattr(module, class_name)


def train(
    model: nn.Module, data: dict[str, torch.Tensor], steps: int, batch: int, seed: int
) -> tuple[float, float]:
    """Validation accuracy after ``steps`` of SGD, and milliseconds per step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        index = torch.randint(len(data["x"]), (batch,), generator=generator)
        x, y = data["x"][index], data["y"][index]
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:  # the first step compiles or loads kernels: not timed
            if x.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
    if data["x"].is_cuda:
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / max(steps - 1, 1) * 1e3
    model.eval()
    with torch.no_grad():
        accuracy = (model(data["val_x"]).argmax(1) == data["val_y"]).float().mean().item()
    return accuracy, per_step


def digits(device: torch.device, validation: int = 297) -> dict[str, torch.Tensor]:
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order].to(device), y[order].to(device)
    return {
        "x": x[validation:],
        "y": y[validation:],
        "val_x": x[:validation],
        "val_y": y[:validation],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layer", type=Path, help="the file `evonorm-search export` wrote")
    parser.add_argument("--class-name", default="EvolvedNormAct")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not args.layer.is_file():
        parser.error(f"no such file: {args.layer}")
    layer = load_class(args.layer, args.class_name)
    device = torch.device(args.device)
    data = digits(device)
    print(f"{layer.__name__}: {layer.__doc__.splitlines()[0]}")
    print(f"{args.steps} steps of batch {args.batch} on the digits, device {device}\n")
    print(f"{'norm-act':<22}{'params':>8}{'val. accuracy':>15}{'ms/step':>9}")
    for name, norm_act in [("BatchNorm2d + ReLU", bn_relu), (layer.__name__, layer)]:
        torch.manual_seed(0)  # the same convolutions and head in both
        model = resnet(norm_act).to(device)
        accuracy, per_step = train(model, data, args.steps, args.batch, seed=1)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<22}{params:>8,}{accuracy:>15.3f}{per_step:>9.1f}")


if __name__ == "__main__":
    main()
