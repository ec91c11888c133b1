"""The compiler: scheduling, deterministic generation, the generated forward and backward
kernels against the eager layer and autograd in triton's interpreter, and ahead-of-time
compilation for sm_90a."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evonorm_search import LayerGraph, baselines
from evonorm_search.codegen import generate, schedule
from evonorm_search.mutation import random_graph
from evonorm_search.rejection import Funnel
from evonorm_search.space import load_space

pytest.importorskip("triton", reason="the compiler needs triton")

TESTS = Path(__file__).resolve().parent
IMAGE_BASELINES = [n for n in baselines.names() if n not in ("layernorm", "rmsnorm", "dyt")]


def random_graphs(count: int, seed: int = 0) -> list[LayerGraph]:
    """Random graphs of both shipped image spaces that reach the compile stage: they pass
    screening stages 1-4 (a graph with non-finite outputs is rejected before, and the
    order in which its infinities meet in a gradient's sum is no contract)."""
    rng = np.random.default_rng(seed)
    funnels = [Funnel(load_space(name), stability=False) for name in ("evonorm_b", "evonorm_s")]
    graphs: list[LayerGraph] = []
    while len(graphs) < count:
        funnel = funnels[len(graphs) % 2]
        screening = funnel.screen(random_graph(funnel.space, rng))
        if screening.passed:
            graphs.append(screening.graph)
    return graphs


# -- scheduling ----------------------------------------------------------------------------


def test_independent_statistics_share_a_stage_and_nested_ones_add_stages():
    plan = schedule(LayerGraph.parse("x / std_instance(x - mean_group(x * std_layer(x)))"),
                    training=True)  # fmt: skip
    assert plan.stages == 3
    assert [(p.stage, p.axis) for p in plan.passes] == [(0, "layer"), (1, "group"),
                                                        (2, "instance")]  # fmt: skip
    flat = schedule(baselines.get("evonorm_b0"), training=True)
    assert flat.stages == 1 and [p.axis for p in flat.passes] == ["batch", "instance"]


def test_eval_mode_reads_batch_statistics_from_running_estimates():
    graph = LayerGraph.parse("x / std_instance(x - mean_batch(x))")
    train, evaluate = schedule(graph, training=True), schedule(graph, training=False)
    assert [(p.stage, p.axis) for p in train.passes] == [(0, "batch"), (1, "instance")]
    assert [(p.stage, p.axis) for p in evaluate.passes] == [(0, "instance")]
    (batch,) = [k for k in evaluate.statistics if evaluate.graph.node(k).axis == "batch"]
    assert evaluate.from_running(batch) and not train.from_running(batch)


def test_generation_is_deterministic_and_built_from_templates():
    first, second = generate(baselines.get("evonorm_s0")), generate(baselines.get("evonorm_s0"))
    assert first.text == second.text and first.digest == second.digest
    assert generate(LayerGraph.parse("x * sigmoid(x * v1) / std_group(x)")).digest == first.digest
    assert "tl.sigmoid" in first.text and "def forward(" in first.text
    assert first.digest != generate(baselines.get("gn_relu")).digest


# -- the interpreter ---------------------------------------------------------------------


def run_in_interpreter(graphs: list[LayerGraph], tmp_path: Path) -> list[dict]:
    listing = tmp_path / "graphs.json"
    listing.write_text(json.dumps([g.to_json() for g in graphs]))
    env = {**os.environ, "TRITON_INTERPRET": "1", "EVONORM_KERNEL_CACHE": str(tmp_path / "k")}
    out = subprocess.run([sys.executable, str(TESTS / "kernel_checks.py"), str(listing)],
                         capture_output=True, text=True, env=env, timeout=1800)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def assert_all_match(results: list[dict]) -> None:
    bad = [r for r in results if max(r["output"], r["buffers"], r["gradients"]) >= 1e-4]
    assert not bad, bad[:5]


def test_baselines_match_the_eager_layer_in_the_interpreter(tmp_path):
    graphs = [baselines.get(n) for n in baselines.names()]
    graphs.append(LayerGraph.parse("x / std_instance(x - mean_group(x * std_layer(x)))"))
    results = run_in_interpreter(graphs, tmp_path)
    assert len(results) == len(graphs) * 6  # 3 shapes x train/eval
    assert_all_match(results)


@pytest.mark.slow
def test_random_graphs_match_the_eager_layer_in_the_interpreter(tmp_path):
    results = run_in_interpreter(random_graphs(200), tmp_path)
    assert len(results) == 1200
    assert_all_match(results)


def test_batch_statistics_split_across_programs_merge_exactly(tmp_path):
    """Few channels, many N*H*W: each channel's batch statistics are reduced by several
    programs and their partial results merged (Chan's formula)."""
    code = (
        "import torch\n"
        "from evonorm_search import GraphNormAct, baselines\n"
        "from evonorm_search.codegen import generate\n"
        "from evonorm_search.codegen.runtime import forward, pass_launch\n"
        "assert pass_launch('batch', 8, 3, 1600, 1).split > 1\n"
        "layer = GraphNormAct(baselines.get('bn_relu'), 3)\n"
        "x = torch.randn(8, 3, 40, 40) * 3 + 2\n"
        "running = {i: getattr(layer, n).clone() for i, n in layer._running_names.items()}\n"
        "with torch.no_grad():\n"
        "    y, *_ = forward(generate(layer.program), x, layer.v0, layer.v1, layer.weight,\n"
        "                   layer.bias, groups=1, eps=1e-5, training=True, momentum=0.1,\n"
        "                   running=running)\n"
        "    expected = layer(x)\n"
        "print((y - expected).abs().max().item())\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "EVONORM_KERNEL_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout) < 1e-5


# -- ahead of time, for H100 -------------------------------------------------------------


def aot(graphs: list[LayerGraph], tmp_path: Path, monkeypatch) -> list:
    from evonorm_search.codegen.aot import compile_kernels, has_cuda_backend

    if not has_cuda_backend():
        pytest.skip("the installed triton has no CUDA backend: no ahead-of-time compilation")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("EVONORM_KERNEL_CACHE", str(tmp_path))
    return [compile_kernels(generate(g)) for g in graphs]


def test_baselines_compile_for_sm90a_without_spills(tmp_path, monkeypatch):
    reports = aot([baselines.get(n) for n in IMAGE_BASELINES], tmp_path, monkeypatch)
    for name, kernels in zip(IMAGE_BASELINES, reports, strict=True):
        assert kernels and all(k.spill_bytes == 0 for k in kernels), (name, kernels)
        assert all(0 < k.registers <= 255 for k in kernels), (name, kernels)
        names = {k.kernel for k in kernels}
        assert {"forward", "backward_train", "backward_eval"} <= names, names
        assert {k.direction for k in kernels} == {"forward", "backward"}


@pytest.mark.slow
def test_random_graphs_compile_for_sm90a_without_spills(tmp_path, monkeypatch):
    reports = aot(random_graphs(200), tmp_path, monkeypatch)
    spilled = [k for kernels in reports for k in kernels if k.spill_bytes]
    assert not spilled


def test_every_elementwise_op_has_a_triton_template():
    from evonorm_search.ops import ELEMENTWISE

    for op in ELEMENTWISE.values():
        fields = {"a": "t4", "b": "t5"} if op.arity == 2 else {"a": "t4"}
        assert op.triton and "t4" in op.triton.format(**fields), op.name
