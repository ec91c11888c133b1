"""The compiler: scheduling, deterministic generation, the generated forward and backward
kernels against the eager layer and autograd in triton's interpreter, and ahead-of-time
compilation for sm_90a."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evonorm_search import LayerGraph, baselines
from evonorm_search.codegen import generate, schedule
from evonorm_search.codegen.verify import failed, verify_in_subprocess
from evonorm_search.rejection import screened_random_graphs
from evonorm_search.space import load_space

pytest.importorskip("triton", reason="the compiler needs triton")

TESTS = Path(__file__).resolve().parent
IMAGE_BASELINES = [n for n in baselines.names() if baselines.describe(n).tensor != "sequence"]
SEQUENCE_BASELINES = [n for n in baselines.names() if baselines.describe(n).tensor == "sequence"]


def random_graphs(count: int, seed: int = 0) -> list[LayerGraph]:
    """Random graphs of both shipped image spaces that reach the compile stage."""
    return screened_random_graphs([load_space("evonorm_b"), load_space("evonorm_s")], count, seed)


# -- scheduling ----------------------------------------------------------------------------


def test_independent_statistics_share_a_stage_and_nested_ones_add_stages():
    plan = schedule(
        LayerGraph.parse("x / std_instance(x - mean_group(x * std_layer(x)))"), training=True
    )
    assert plan.stages == 3
    assert [(p.stage, p.axes) for p in plan.passes] == [
        (0, ("layer",)),
        (1, ("group",)),
        (2, ("instance",)),
    ]
    flat = schedule(baselines.get("evonorm_b0"), training=True)
    assert flat.stages == 1 and [p.axes for p in flat.passes] == [("batch", "instance")]


def test_eval_mode_reads_batch_statistics_from_running_estimates():
    graph = LayerGraph.parse("x / std_instance(x - mean_batch(x))")
    train, evaluate = schedule(graph, training=True), schedule(graph, training=False)
    assert [(p.stage, p.axes) for p in train.passes] == [(0, ("batch",)), (1, ("instance",))]
    assert [(p.stage, p.axes) for p in evaluate.passes] == [(0, ("instance",))]
    (batch,) = [k for k in evaluate.statistics if evaluate.graph.node(k).axis == "batch"]
    assert evaluate.from_running(batch) and not train.from_running(batch)


def test_generation_is_deterministic_and_built_from_templates():
    first, second = generate(baselines.get("evonorm_s0")), generate(baselines.get("evonorm_s0"))
    assert first.text == second.text and first.digest == second.digest
    assert generate(LayerGraph.parse("x * sigmoid(x * v1) / std_group(x)")).digest == first.digest
    assert "tl.sigmoid" in first.text and "def forward(" in first.text
    assert first.digest != generate(baselines.get("gn_relu")).digest


# -- the interpreter ---------------------------------------------------------------------


def run_in_interpreter(graphs: list[LayerGraph], tmp_path: Path, monkeypatch) -> list[dict]:
    monkeypatch.setenv("EVONORM_KERNEL_CACHE", str(tmp_path / "kernels"))
    return verify_in_subprocess(graphs, timeout=3600)


def assert_all_match(results: list[dict]) -> None:
    bad = [r for r in results if failed(r)]
    assert not bad, bad[:5]


def test_baselines_match_the_eager_layer_in_the_interpreter(tmp_path, monkeypatch):
    graphs = [baselines.get(n) for n in baselines.names()]
    graphs.append(LayerGraph.parse("x / std_instance(x - mean_group(x * std_layer(x)))"))
    results = run_in_interpreter(graphs, tmp_path, monkeypatch)
    assert len(results) == len(graphs) * 6  # 3 shapes x train/eval
    assert_all_match(results)


@pytest.mark.slow
def test_random_graphs_match_the_eager_layer_in_the_interpreter(tmp_path, monkeypatch):
    results = run_in_interpreter(random_graphs(200), tmp_path, monkeypatch)
    assert len(results) == 1200
    assert_all_match(results)


def test_statistics_merged_from_many_blocks_are_exact(tmp_path):
    """Batch statistics over N*H*W and instance statistics over H*W larger than a block
    are merged from per-block partial results (Chan's formula); a constant channel's
    variance comes out exactly 0, so its output is exactly the bias."""
    code = (
        "import torch\n"
        "from evonorm_search import GraphNormAct, baselines\n"
        "from evonorm_search.codegen import launch\n"
        "assert launch.stage_block(1600) == (1024, 2)\n"
        "launch.ON_CHIP_ELEMENTS = 0\n"
        "worst = 0.0\n"
        "for name in ('bn_relu', 'in_relu', 'evonorm_b0'):\n"
        "    eager = GraphNormAct(baselines.get(name), 3, backend='eager')\n"
        "    fused = GraphNormAct(baselines.get(name), 3, backend='triton')\n"
        "    x = torch.randn(8, 3, 40, 40) * 3 + 2\n"
        "    x[:, 1] = 0.7\n"
        "    with torch.no_grad():\n"
        "        eager.bias.fill_(0.25), fused.bias.fill_(0.25)\n"
        "        y, expected = fused(x), eager(x)\n"
        "    assert (y[:, 1] == 0.25).all() or name == 'evonorm_b0', name\n"
        "    worst = max(worst, (y - expected)[:, [0, 2]].abs().max().item())\n"
        "print(worst)\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "EVONORM_KERNEL_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout) < 1e-5


# -- the launcher, standalone ------------------------------------------------------------


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, ast.dump(node)
            imported.add(node.module)
        assert not (isinstance(node, ast.Name) and node.id in ("__import__", "importlib"))
    return imported


@pytest.mark.parametrize("name", ["launch", "customop", "eager"])
def test_carried_modules_import_only_the_standard_library_torch_and_triton(name):
    """An exported layer carries the eager runtime's, the launcher's and the custom ops' text
    verbatim: they may import nothing else (but the carried modules whose text comes first)."""
    from evonorm_search import eager
    from evonorm_search.codegen import customop, launch

    module = {"launch": launch, "customop": customop, "eager": eager}[name]
    allowed = {
        "math",
        "numbers",
        "operator",
        "typing",
        "collections.abc",
        "torch",
        "triton",
        "triton.language",
    }
    allowed |= {
        "launch": {"evonorm_search.eager"},
        "customop": {"evonorm_search.eager", "evonorm_search.codegen.launch"},
        "eager": set(),
    }[name]
    assert _imports(module) <= allowed, _imports(module)


def plain(value) -> bool:
    """Whether ``value`` is JSON-like data: str, int, float, bool, None, lists, str-keyed
    dicts."""
    if isinstance(value, list):
        return all(plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return value is None or type(value) in (str, int, float, bool)


@pytest.mark.parametrize("name", baselines.names())
def test_the_launch_plan_is_plain_data_that_round_trips_through_repr(name):
    source = generate(baselines.get(name))
    plan = source.launch
    assert plain(plan), plan
    assert ast.literal_eval(repr(plan)) == plan and repr(ast.literal_eval(repr(plan))) == repr(plan)
    assert json.loads(json.dumps(plan)) == plan
    assert plan["on_chip"] == source.on_chip_axis
    for mode, schedule_ in (("train", source.training), ("eval", source.eval)):
        assert [s["node"] for s in plan[mode]["statistics"]] == list(schedule_.statistics)
        assert [s["node"] for s in plan[mode]["statistics"] if s["running"]] == [
            k for k in schedule_.statistics if schedule_.from_running(k)
        ]
        for key, kernels in (
            ("reduce", source.reduce_kernels),
            ("backward_reduce", source.backward_reduce_kernels),
        ):
            assert [(k["name"], tuple(k["statistics"])) for k in plan[mode][key]] == [
                (kernel, p.statistics) for kernel, p in kernels[mode]
            ]


def test_the_launcher_runs_from_its_text_alone(tmp_path):
    """launch.py's and customop.py's text, executed on their own and registered under another
    namespace, runs the generated kernels exactly as the package's op does (multi-pass and on
    chip)."""
    code = """
import ast
import torch
from pathlib import Path
from evonorm_search import GraphNormAct, baselines
from evonorm_search.codegen import customop, launch, runtime
from evonorm_search.codegen.op import _source
from evonorm_search.export.text import carried_text, imports_of
namespace = {"__name__": "standalone_launch"}
exec(compile(Path(launch.__file__).read_text(), "standalone_launch.py", "exec"), namespace)
# customop.py as an exported file carries it: its imports but ours, then its code
customop_text = imports_of((customop,), []) + chr(10) + carried_text(customop)
exec(compile(customop_text, "standalone_customop.py", "exec"), namespace)
assert not any(isinstance(v, type(launch)) and v.__name__.startswith("evonorm_search")
               for v in namespace.values())
standalone = namespace["register_ops"](
    "evonorm_standalone", lambda g: ast.literal_eval(repr(_source(g).launch)),
    lambda g: runtime.load_module(_source(g)))
for name in ("evonorm_b0", "gn_relu", "evonorm_s0"):
    for training in (True, False):
        torch.manual_seed(0)
        layer = GraphNormAct(baselines.get(name), 6, groups=3, backend="triton").train(training)
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_()
        names = list(layer._running_names.values())
        initial = [getattr(layer, n).uniform_(0.5, 2.0).clone() for n in names]
        runs = []
        for run in ("package", "standalone"):
            torch.manual_seed(1)
            x = (torch.randn(4, 6, 5, 3) * 2 + 0.5).requires_grad_()
            running = [r.clone() for r in initial]
            params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
            if run == "package":
                y = layer(x)  # through evonorm_search::fused_forward
                params, running = list(layer.parameters()), [getattr(layer, n) for n in names]
            else:
                y = standalone(layer._program_json, x, *params, running, groups=3,
                               eps=layer.eps, training=training, momentum=layer.momentum)
            y.backward(torch.ones_like(y))
            grads = [t.grad for t in (x, *params)]
            runs.append([y.detach(), *grads, *[r.clone() for r in running]])
        for a, b in zip(*runs, strict=True):
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), name
print("ok")
"""
    env = {**os.environ, "TRITON_INTERPRET": "1", "EVONORM_KERNEL_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"


# -- ahead of time, for H100 -------------------------------------------------------------


def aot(graphs: list[LayerGraph], tmp_path: Path, monkeypatch, **shape) -> list:
    from evonorm_search.codegen.aot import compile_kernels, has_cuda_backend

    if not has_cuda_backend():
        pytest.skip("the installed triton has no CUDA backend: no ahead-of-time compilation")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("EVONORM_KERNEL_CACHE", str(tmp_path))
    return [compile_kernels(generate(g), **shape) for g in graphs]


def test_baselines_compile_for_sm90a_without_spills(tmp_path, monkeypatch):
    """At the reference shape (128, 64, 56, 56) the groups of gn_relu, in_relu and
    evonorm_s0 fit on chip (one kernel each way); at 128x128 pixels they take the
    multi-pass kernels, which must compile as well."""
    graphs = [baselines.get(n) for n in IMAGE_BASELINES]
    reference = aot(graphs, tmp_path, monkeypatch)
    large = aot(graphs, tmp_path, monkeypatch, shape=(8, 64, 128, 128))
    for name, kernels, multipass in zip(IMAGE_BASELINES, reference, large, strict=True):
        for report in (kernels, multipass):
            assert report and all(k.spill_bytes == 0 for k in report), (name, report)
            assert all(0 < k.registers <= 255 for k in report), (name, report)
            assert {k.direction for k in report} == {"forward", "backward"}
        names = {k.kernel for k in kernels}
        if name in ("gn_relu", "in_relu", "evonorm_s0"):
            assert names == {"fused_forward", "fused_backward"}, (name, names)
        names = {k.kernel for k in multipass}
        assert {"forward", "backward_train", "backward_eval"} <= names, (name, names)


def test_sequence_baselines_compile_for_sm90a_without_spills(tmp_path, monkeypatch):
    """Token tensors of a ViT-B/16 block: 64 sequences of 197 tokens with 768 features."""
    reports = aot(
        [baselines.get(n) for n in SEQUENCE_BASELINES], tmp_path, monkeypatch, shape=(64, 768, 197)
    )
    for name, report in zip(SEQUENCE_BASELINES, reports, strict=True):
        assert report and all(k.spill_bytes == 0 for k in report), (name, report)
        assert {k.direction for k in report} == {"forward", "backward"}, (name, report)


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


# -- the kernel cache ------------------------------------------------------------------------


def test_the_kernel_cache_is_private_and_a_shared_one_is_refused(tmp_path, monkeypatch):
    """Its files are imported as code: created 0700, and refused (one line naming it) where
    another user could write into it."""
    from evonorm_search.codegen.runtime import load_module, private_cache_dir
    from evonorm_search.errors import KernelCacheError

    fresh = tmp_path / "new" / "kernels"
    monkeypatch.setenv("EVONORM_KERNEL_CACHE", str(fresh))
    assert private_cache_dir() == fresh and (fresh.stat().st_mode & 0o777) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    shared.chmod(0o777)
    monkeypatch.setenv("EVONORM_KERNEL_CACHE", str(shared))
    source = generate(LayerGraph.parse("x / std_group(x) + v1"))
    with pytest.raises(
        KernelCacheError,
        match=f"the kernel cache {shared} can be written by other users \\(mode 777\\)",
    ):
        load_module(source)
    assert list(shared.iterdir()) == []  # nothing written into it, nothing imported
    env = {**os.environ, "EVONORM_KERNEL_CACHE": str(shared)}
    out = subprocess.run(
        [sys.executable, "-m", "evonorm_search", "compile", "x / std_group(x)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"evonorm-search: error: the kernel cache {shared} can be written by other users "
        "(mode 777): chmod 700 it, or set EVONORM_KERNEL_CACHE to a directory of your own"
    ]


def test_a_failed_kernel_write_leaves_no_temporary_file(tmp_path):
    from evonorm_search.codegen.runtime import write_source

    source = generate(LayerGraph.parse("x / std_group(x) + v1"))
    (tmp_path / f"evonorm_kernels_{source.digest}.py").mkdir()  # the rename cannot replace it
    with pytest.raises(OSError):
        write_source(source, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"evonorm_kernels_{source.digest}.py"]
    assert write_source(source, tmp_path / "ok").read_text() == source.text
