"""GraphNormAct's backends: the fused Triton custom op (in triton's interpreter, in fresh
interpreters since triton reads TRITON_INTERPRET when kernels are defined), the inductor
backend, the choice and refusal rules, and the compile stage's figures and refusals."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from evonorm_search import GraphNormAct, LayerGraph, baselines
from evonorm_search.codegen.verify import worst

pytest.importorskip("triton", reason="the fused backend needs triton")


def run_interpreted(code: str, tmp_path) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1", "EVONORM_KERNEL_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


# -- choosing a backend --------------------------------------------------------------------


def test_auto_runs_eager_on_the_cpu_and_triton_refuses_cpu_tensors(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(2, 8, 3, 3)
    auto = GraphNormAct(baselines.get("evonorm_s0"), 8, groups=4)
    eager = GraphNormAct(baselines.get("evonorm_s0"), 8, groups=4, backend="eager")
    assert torch.equal(auto(x), eager(x))
    triton_layer = GraphNormAct(baselines.get("evonorm_s0"), 8, groups=4, backend="triton")
    with pytest.raises(RuntimeError, match="backend='triton' runs CUDA tensors"):
        triton_layer(x)


def test_a_graph_the_compiler_cannot_handle_is_refused_at_construction(monkeypatch):
    from evonorm_search.codegen import source

    tanh = dataclasses.replace(source.ELEMENTWISE["tanh"], triton="")
    monkeypatch.setattr(source, "ELEMENTWISE", {**source.ELEMENTWISE, "tanh": tanh})
    graph = LayerGraph.parse("tanh(x) / std_group(x)")
    with pytest.raises(ValueError, match="op 'tanh' has no Triton expression"):
        GraphNormAct(graph, 8, backend="triton")
    assert GraphNormAct(graph, 8, backend="auto")._triton_refusal  # auto falls back
    from evonorm_search.codegen.compiler import compile_layer

    refusal = compile_layer(graph, aot=False)
    assert not refusal.ok and refusal.reason.startswith("unsupported: op 'tanh'")


def test_triton_backend_refuses_inputs_beyond_32_bit_indexing():
    layer = GraphNormAct(baselines.get("gn_relu"), 8, backend="triton")
    huge = torch.zeros(1, 1, 1).expand(2**16, 8, 2**12)  # 2^31 elements, no memory
    with pytest.raises(ValueError, match="indexes with 32 bits"):
        layer._runs_triton = lambda x: True  # the check precedes any device question
        layer(huge)


@pytest.mark.slow
def test_inductor_backend_matches_eager():
    torch.manual_seed(0)
    for name in ("evonorm_b0", "evonorm_s0"):
        eager = GraphNormAct(baselines.get(name), 8, groups=4, backend="eager")
        compiled = GraphNormAct(baselines.get(name), 8, groups=4, backend="inductor")
        with torch.no_grad():
            eager.v1.uniform_(0.5, 2)
        compiled.load_state_dict(eager.state_dict())
        x = torch.randn(4, 8, 5, 5, requires_grad=True)
        x2 = x.detach().clone().requires_grad_()
        eager(x).square().sum().backward()
        compiled(x2).square().sum().backward()
        assert worst(x2.grad, x.grad) < 1e-4
        for a, b in zip(compiled.parameters(), eager.parameters(), strict=True):
            assert (a.grad is None) == (b.grad is None)
            if a.grad is not None:
                assert worst(a.grad, b.grad) < 1e-4
        for a, b in zip(compiled.buffers(), eager.buffers(), strict=True):
            assert worst(a, b) < 1e-6


# -- the custom op in the interpreter ------------------------------------------------------


@pytest.mark.slow
def test_custom_op_under_torch_compile_dtypes_layouts_and_empty_batches(tmp_path):
    out = run_interpreted(
        """
        import torch
        from evonorm_search import GraphNormAct, baselines
        from evonorm_search.codegen.verify import worst

        def pair(name, c=6, **kw):
            eager = GraphNormAct(baselines.get(name), c, groups=3, backend="eager", **kw)
            fused = GraphNormAct(baselines.get(name), c, groups=3, backend="triton", **kw)
            with torch.no_grad():
                eager.v1.uniform_(0.5, 2)
                eager.weight.uniform_(0.5, 2)
            fused.load_state_dict(eager.state_dict())
            return eager, fused

        # torch.compile traces the custom op (fullgraph: no graph break), training included
        for name in ("evonorm_b0", "evonorm_s0", "bn_relu"):
            eager, fused = pair(name)
            compiled = torch.compile(fused, fullgraph=True)
            x = torch.randn(4, 6, 5, 3, requires_grad=True)
            x2 = x.detach().clone().requires_grad_()
            eager(x).sum().backward()
            compiled(x2).sum().backward()
            assert worst(x2.grad, x.grad) < 1e-4, name
            for a, b in zip(fused.buffers(), eager.buffers()):
                assert worst(a, b) < 1e-5, name

        # half precision in, half precision out; statistics in float32
        for dtype in (torch.float16, torch.bfloat16):
            eager, fused = pair("evonorm_s0")
            x = torch.randn(4, 6, 5, 3).to(dtype).requires_grad_()
            x2 = x.detach().clone().requires_grad_()
            y, y2 = eager(x), fused(x2)
            assert y2.dtype == dtype
            tolerance = 1e-2 if dtype == torch.float16 else 2e-2
            assert worst(y2.float(), y.float()) < tolerance, dtype
            y.float().sum().backward()
            y2.float().sum().backward()
            assert worst(x2.grad.float(), x.grad.float()) < tolerance, dtype

        # float64 computes in float64: gradcheck through the fused op
        from evonorm_search.codegen.op import fused_norm_act
        for name in ("evonorm_b0", "evonorm_s0", "gn_relu"):
            layer = GraphNormAct(baselines.get(name), 6, groups=3, backend="triton").double()
            running = [getattr(layer, n).clone() for n in layer._running_names.values()]
            def f(*args):
                return fused_norm_act(layer._program_json, *args, running, groups=3,
                                      eps=1e-5, training=True, momentum=0.1)
            args = [torch.randn(3, 6, 2, 2, dtype=torch.float64)]
            args += [torch.rand(6, dtype=torch.float64) + 0.5 for _ in range(4)]
            args = [a.requires_grad_() for a in args]
            assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5), name

        # a channels_last input is made contiguous: the same values
        eager, fused = pair("gn_relu")
        x = torch.randn(4, 6, 5, 3).to(memory_format=torch.channels_last)
        assert worst(fused(x), eager(x)) < 1e-5

        # an empty batch: an empty output and gradient, running estimates untouched
        eager, fused = pair("bn_relu")
        before = [b.clone() for b in fused.buffers()]
        x = torch.randn(0, 6, 5, 3, requires_grad=True)
        y = fused(x)
        assert y.shape == (0, 6, 5, 3)
        y.sum().backward()
        assert x.grad.shape == x.shape and torch.equal(fused.weight.grad, torch.zeros(6))
        assert all(torch.equal(a, b) for a, b in zip(before, fused.buffers()))

        # unread parameters get no gradient, as in the eager layer
        eager, fused = pair("evonorm_s0")
        fused(torch.randn(2, 6, 3, 3)).sum().backward()
        assert fused.v0.grad is None and fused.v1.grad is not None
        print("ok")
        """,
        tmp_path,
    )
    assert out.strip().endswith("ok")


# -- the compile stage -----------------------------------------------------------------------


def test_traffic_model_counts_the_kernels_generated():
    from evonorm_search.codegen import generate
    from evonorm_search.codegen.compiler import compile_layer

    shape = (128, 64, 56, 56)
    for name in ("gn_relu", "evonorm_s0", "in_relu"):  # groups fit on chip: read once
        result = compile_layer(baselines.get(name), shape=shape, aot=False)
        assert (result.traffic_fwd, result.traffic_bwd) == (2, 3), name
    for name in ("bn_relu", "evonorm_b0", "ln_relu"):  # one stage: one reduction pass
        result = compile_layer(baselines.get(name), shape=shape, aot=False)
        assert (result.traffic_fwd, result.traffic_bwd) == (3, 5), name
    nested = LayerGraph.parse("x / std_instance(x - mean_group(x * std_layer(x)))")
    assert generate(nested).traffic("train") == (5, 9)  # three stages: three passes each way
    assert generate(baselines.get("bn_relu")).traffic("eval") == (2, 3)  # running estimates


@pytest.mark.slow
def test_single_stage_random_graphs_take_one_reduction_pass():
    from evonorm_search.codegen import generate, schedule
    from evonorm_search.rejection import screened_random_graphs
    from evonorm_search.space import load_space

    spaces = [load_space("evonorm_b"), load_space("evonorm_s")]
    graphs = screened_random_graphs(spaces, 200, seed=1)
    single = [g for g in graphs if schedule(g, training=True).stages == 1]
    assert len(single) > 20
    for graph in single:
        fwd, bwd = generate(graph).traffic("train")
        assert fwd <= 3 and bwd <= 5, graph.formula()


def test_compile_stage_refuses_spills_and_mismatches(monkeypatch):
    from evonorm_search.codegen import compiler
    from evonorm_search.codegen.aot import has_cuda_backend

    graph = baselines.get("evonorm_s0")
    if has_cuda_backend():
        refusal = compiler.compile_layer(graph, max_spill_bytes=-1)  # every kernel "spills"
        assert not refusal.ok and refusal.reason.startswith("spills: fused_")
    bad = {
        "formula": graph.formula(),
        "shape": [3, 6, 7],
        "training": False,
        "output": 0.5,
        "buffers": 0.0,
        "gradients": 0.0,
        "gradient_presence": [],
    }
    monkeypatch.setattr("evonorm_search.codegen.verify.verify_in_subprocess", lambda graphs: [bad])
    refusal = compiler.compile_layer(graph, aot=False, verify=True)
    assert not refusal.ok
    assert refusal.reason == (
        "mismatch: the kernels disagree with the eager layer at shape "
        "(3, 6, 7) in eval mode: error 0.5 (tolerance 0.0001)"
    )


def test_compile_stage_verifies_in_the_interpreter(tmp_path, monkeypatch):
    from evonorm_search.codegen.compiler import compile_layer

    monkeypatch.setenv("EVONORM_KERNEL_CACHE", str(tmp_path))
    result = compile_layer(baselines.get("evonorm_b0"), aot=False, verify=True)
    assert result.ok and result.verified
    figures = result.figures()
    assert figures["kernel_hash"] == result.kernel_hash and len(result.kernel_hash) == 20
    assert (figures["traffic_fwd"], figures["traffic_bwd"]) == (3, 5)
