"""The fused layer against the eager one, on tiny probes in triton's interpreter.

Triton reads ``TRITON_INTERPRET`` when kernels are defined, so this runs as a script in a
fresh interpreter (``verify_in_subprocess`` starts one):

    TRITON_INTERPRET=1 python -m evonorm_search.codegen.verify GRAPHS.json

GRAPHS.json lists graph JSON texts; prints one JSON line per (graph, shape, mode) with the
worst relative error of the output, the running buffers and the gradients of x, v0, v1,
weight and bias (against torch autograd through the eager layer, with a non-contiguous
upstream gradient; where float32 is ill-conditioned, against float64 autograd).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from evonorm_search.codegen import launch
from evonorm_search.codegen.source import generate
from evonorm_search.graph import LayerGraph
from evonorm_search.isolation import python_module_command
from evonorm_search.layer import GraphNormAct

__all__ = ["SHAPES", "TOLERANCE", "compare", "verify_in_subprocess"]

SHAPES = ((4, 6, 5, 3), (3, 6, 7), (2, 10, 4, 4))  # C=6 and 10: not powers of two
TOLERANCE = 1e-4  # float32, relative to max(|reference|, 1)


def worst(a: torch.Tensor, b: torch.Tensor, *, sums: bool = False) -> float:
    """Largest error relative to max(|reference|, 1), NaN agreeing with NaN.  With ``sums``
    (per-channel gradients, sums over many elements) any two non-finite values agree:
    whether infinities of both signs meet as NaN depends on the order of summation."""
    a, b = a.detach(), b.detach()
    agree = torch.isnan(a) & torch.isnan(b) | torch.isinf(a) & (a == b)
    if sums:
        agree |= ~torch.isfinite(a) & ~torch.isfinite(b)
    error = ((a - b).abs() / b.abs().clamp(min=1.0)).masked_fill(agree, 0.0)
    return float(error.nan_to_num(nan=float("inf")).max()) if error.numel() else 0.0


def _grads(x: torch.Tensor, layer: GraphNormAct) -> list[torch.Tensor]:
    return [
        t.grad if t.grad is not None else torch.zeros_like(t)
        for t in (x, layer.v0, layer.v1, layer.weight, layer.bias)
    ]


def compare(graph: LayerGraph, shape: tuple[int, ...], training: bool, seed: int) -> dict:
    """Worst errors of ``GraphNormAct(backend="triton")`` against the eager layer on a
    random probe (random parameters and running estimates) of ``shape``, through the
    single-kernel path where the graph has one and through the multi-pass path."""
    results = [_compare(graph, shape, training, seed)]
    if generate(graph).on_chip_axis:
        saved, launch.ON_CHIP_ELEMENTS = launch.ON_CHIP_ELEMENTS, 0
        try:
            results.append(_compare(graph, shape, training, seed))
        finally:
            launch.ON_CHIP_ELEMENTS = saved
    worst_of = {key: max(r[key] for r in results) for key in ("output", "buffers", "gradients")}
    presence = sorted({name for r in results for name in r["gradient_presence"]})
    return {**results[0], **worst_of, "gradient_presence": presence, "paths": len(results)}


def _compare(graph: LayerGraph, shape: tuple[int, ...], training: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    layer = GraphNormAct(graph, shape[1], groups=3, backend="eager").train(training)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
        for b in layer.buffers():
            b.uniform_(0.5, 2.0)
    fused = GraphNormAct(graph, shape[1], groups=3, backend="triton").train(training)
    fused.load_state_dict(layer.state_dict())
    exact = copy.deepcopy(layer).double()
    x = (torch.randn(shape) * 2 + 0.5).requires_grad_()
    dy = torch.randn(*reversed(shape)).permute(*reversed(range(len(shape))))  # strided
    expected = layer(x)
    expected.backward(dy)
    x64 = x.detach().double().requires_grad_()
    exact(x64).backward(dy.double())
    xf = x.detach().clone().requires_grad_()
    got = fused(xf)
    got.backward(dy)
    missing = [
        name
        for name, p in fused.named_parameters()
        if (p.grad is None) != (getattr(layer, name).grad is None)
    ]
    gradients = []
    for position, (ours, eager, truth) in enumerate(
        zip(_grads(xf, fused), _grads(x, layer), _grads(x64, exact), strict=True)
    ):
        sums = position > 0
        error = worst(ours, eager, sums=sums)
        # Where float32 itself is ill-conditioned (1 - tanh^2 near 1, 1/x near 0) the eager
        # layer is no better a reference: then ours must be as close to float64 as it is.
        if error >= TOLERANCE and worst(ours, truth.float(), sums=sums) <= 2 * worst(
            eager, truth.float(), sums=sums
        ):
            error = 0.0
        gradients.append(error)
    buffers = [worst(a, b) for a, b in zip(fused.buffers(), layer.buffers(), strict=True)]
    return {
        "formula": layer.formula,
        "shape": list(shape),
        "training": training,
        "output": worst(got.detach(), expected.detach()),
        "buffers": max(buffers, default=0.0),
        "gradients": max(gradients),
        "gradient_presence": missing,
    }


def failed(result: dict) -> bool:
    return (
        bool(result["gradient_presence"])
        or max(result["output"], result["buffers"], result["gradients"]) >= TOLERANCE
    )


def verify_in_subprocess(graphs: list[LayerGraph], *, timeout: float = 600) -> list[dict]:
    """``compare`` every graph on every probe shape in both modes, in a fresh interpreter
    with ``TRITON_INTERPRET=1``.  Raises RuntimeError when the probe itself fails."""
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "graphs.json"
        listing.write_text(json.dumps([g.to_json() for g in graphs]))
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        # Isolated from the caller's working directory (see ``isolation``).
        out = subprocess.run(
            python_module_command("evonorm_search.codegen.verify", str(listing)),
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=timeout,
        )
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or ["no output"]
        raise RuntimeError(f"the interpreter probe failed: {lines[-1]}")
    return [json.loads(line) for line in out.stdout.splitlines()]


def main() -> None:
    texts = json.loads(Path(sys.argv[1]).read_text())
    graphs = [LayerGraph.from_json(text) for text in texts]
    for number, graph in enumerate(graphs):
        for shape in SHAPES:
            for training in (True, False):
                print(json.dumps(compare(graph, shape, training, number)), flush=True)


if __name__ == "__main__":
    main()
