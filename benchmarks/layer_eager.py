"""Cost of the eager GraphNormAct against the native PyTorch layers it reproduces.

Times forward + backward of each baseline graph and of its native counterpart in the same
process, on the same tensor, and prints milliseconds and the ratio.  The ratio is what a
fused kernel (the compiler) has to win back.  ``--compile`` adds torch.compile of the
graph layer (slow to compile on a CPU).

    python benchmarks/layer_eager.py [--shape 32,64,32,32] [--device cpu] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import benchmark

from evonorm_search import GraphNormAct, baselines


class NormAct(nn.Module):
    """A native normalization followed by an activation."""

    def __init__(self, norm: nn.Module, act) -> None:
        super().__init__()
        self.norm, self.act = norm, act

    def forward(self, x):
        return self.act(self.norm(x))


def native_counterparts(c: int, groups: int) -> dict[str, tuple[str, nn.Module]]:
    return {
        "bn_relu": ("BatchNorm2d + ReLU", NormAct(nn.BatchNorm2d(c), F.relu)),
        "gn_relu": ("GroupNorm + ReLU", NormAct(nn.GroupNorm(groups, c), F.relu)),
        "in_relu": ("InstanceNorm2d + ReLU", NormAct(nn.InstanceNorm2d(c, affine=True), F.relu)),
        "evonorm_b0": ("BatchNorm2d + ReLU", NormAct(nn.BatchNorm2d(c), F.relu)),
        "evonorm_s0": ("GroupNorm + SiLU", NormAct(nn.GroupNorm(groups, c), F.silu)),
    }


def time_fwd_bwd(module: nn.Module, x: torch.Tensor, min_run_time: float) -> float:
    """Median seconds of one forward + backward."""
    x = x.detach().requires_grad_()
    grad = torch.randn_like(x)

    def step():
        module(x).backward(grad)

    step()  # warm-up (and compilation)
    timer = benchmark.Timer(
        stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads()
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="32,64,32,32", help="N,C,H,W")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per timing")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()

    shape = tuple(int(s) for s in args.shape.split(","))
    c = shape[1]
    x = torch.randn(shape, device=args.device)
    print(
        f"forward+backward, {tuple(shape)} float32 on {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    header = (
        f"{'layer':<12} {'native counterpart':<22} {'native ms':>9} {'eager ms':>9} {'ratio':>6}"
    )
    if args.compile:
        header += f" {'compiled ms':>11} {'ratio':>6} {'compile s':>9}"
    print(header)
    for name, (native_name, native) in native_counterparts(c, args.groups).items():
        native = native.to(args.device)
        layer = GraphNormAct(baselines.get(name), c, groups=args.groups).to(args.device)
        native_s = time_fwd_bwd(native, x, args.min_run_time)
        eager_s = time_fwd_bwd(layer, x, args.min_run_time)
        row = (
            f"{name:<12} {native_name:<22} {native_s * 1e3:9.2f} {eager_s * 1e3:9.2f} "
            f"{eager_s / native_s:5.1f}x"
        )
        if args.compile:
            torch._dynamo.reset()  # each layer compiles afresh, not against a recompile limit
            compiled = torch.compile(
                GraphNormAct(baselines.get(name), c, groups=args.groups).to(args.device)
            )
            start = time.perf_counter()
            compiled(x.detach().requires_grad_()).sum().backward()
            compile_s = time.perf_counter() - start
            compiled_s = time_fwd_bwd(compiled, x, args.min_run_time)
            row += f" {compiled_s * 1e3:11.2f} {compiled_s / native_s:5.1f}x {compile_s:9.1f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
