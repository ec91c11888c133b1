"""Run generated kernels against the eager layer; executed as a script in a fresh
interpreter with TRITON_INTERPRET=1 (triton reads the flag when kernels are defined).

    TRITON_INTERPRET=1 python tests/kernel_checks.py GRAPHS.json

GRAPHS.json lists graph JSON texts; prints one JSON line per (graph, shape, mode) with the
worst relative error of outputs and running buffers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from evonorm_search import GraphNormAct, LayerGraph
from evonorm_search.codegen import generate
from evonorm_search.codegen.runtime import forward

SHAPES = ((4, 6, 5, 3), (3, 6, 7), (2, 10, 4, 4))  # C=6 and 10: not powers of two


def worst(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest error relative to max(|reference|, 1), NaN agreeing with NaN."""
    both_nan = torch.isnan(a) & torch.isnan(b)
    same_inf = torch.isinf(a) & (a == b)
    error = ((a - b).abs() / b.abs().clamp(min=1.0)).masked_fill(both_nan | same_inf, 0.0)
    return float(error.nan_to_num(nan=float("inf")).max()) if error.numel() else 0.0


def check(graph: LayerGraph, shape: tuple[int, ...], training: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    layer = GraphNormAct(graph, shape[1], groups=3).train(training)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
        for b in layer.buffers():
            b.uniform_(0.5, 2.0)
    x = torch.randn(shape) * 2 + 0.5
    running = {i: getattr(layer, name).clone() for i, name in layer._running_names.items()}
    with torch.no_grad():
        expected = layer(x)
        got, _ = forward(generate(layer.program), x, layer.v0, layer.v1, layer.weight,
                         layer.bias, groups=layer.groups, eps=layer.eps, training=training,
                         momentum=layer.momentum, running=running)  # fmt: skip
    buffers = [worst(running[i], getattr(layer, name)) for i, name in layer._running_names.items()]
    return {"formula": layer.formula, "shape": list(shape), "training": training,
            "output": worst(got, expected), "buffers": max(buffers, default=0.0)}  # fmt: skip


def main() -> None:
    texts = json.loads(Path(sys.argv[1]).read_text())
    graphs = [LayerGraph.from_json(text) for text in texts]
    for number, graph in enumerate(graphs):
        for shape in SHAPES:
            for training in (True, False):
                print(json.dumps(check(graph, shape, training, number)), flush=True)


if __name__ == "__main__":
    main()
