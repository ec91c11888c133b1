"""Exported layers with their Triton kernels: one file that runs the generated kernels
(here in triton's interpreter) and PyTorch ops elsewhere.

Every exported file runs in a fresh interpreter that never imports evonorm_search: against
GraphNormAct's tensors under TRITON_INTERPRET=1, compiled ahead of time for sm_90a from the
file alone, without triton, beside other exported layers and under torch.compile.
"""

import ast
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from test_export import MEASURES, _cases, _store_with_candidates, replay_in_a_clean_interpreter

from evonorm_search import GraphError, GraphNormAct, baselines
from evonorm_search.cli import cli
from evonorm_search.codegen import generate
from evonorm_search.codegen.compiler import compile_layer
from evonorm_search.export import export_source
from evonorm_search.graph import as_graph
from evonorm_search.rejection import screened_random_graphs
from evonorm_search.space import load_space
from evonorm_search.store import Store

pytest.importorskip("triton", reason="exported kernels need triton to run or compile")

TOLERANCE = 1e-4  # float32 and float64; bfloat16 outputs round to 8 bits
BF16_TOLERANCE = 2**-6
# The children's environments: triton's interpreter on, or off whatever the caller's says.
INTERPRETED = {**os.environ, "TRITON_INTERPRET": "1"}
NOT_INTERPRETED = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
# Figures quoted in the docstrings of files that other tests only run (an ahead-of-time
# compilation per export is the test below).
FIGURES = {
    "target": "sm_90a",
    "shape": [2, 8, 4, 4],
    "dtype": "float32",
    "registers": 1,
    "spill_bytes": 0,
    "traffic_fwd": 2,
    "traffic_bwd": 3,
    "kernels": 1,
}


def kernel_export(graph, class_name="Exported", **kwargs):
    """``export_source(kernels=True)`` quoting FIGURES as these kernels' (no compilation)."""
    digest = generate(as_graph(graph).canonical()).digest
    return export_source(
        graph, class_name, kernels=True, compiled={**FIGURES, "kernel_hash": digest}, **kwargs
    )


def run_child(tmp_path, code: str, *args: str, env=None, timeout: float = 600) -> dict:
    """Run ``code`` in a fresh interpreter that must not import evonorm_search; its last
    stdout line, JSON."""
    script = tmp_path / "child.py"
    script.write_text(MEASURES + code + '\nassert "evonorm_search" not in sys.modules\n')
    out = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env or NOT_INTERPRETED,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.splitlines()[-1])


LOAD = r"""
import importlib.util, json, sys, warnings
import torch

told = []
warnings.simplefilter("always")
warnings.showwarning = lambda message, *args, **kwargs: told.append(str(message))

def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as `import name` would (torch.compile's guards look it up)
    spec.loader.exec_module(module)
    return module
"""


# -- the kernel path against GraphNormAct ------------------------------------------------


def _kernel_cases():
    """Every baseline, 50 random graphs of both image spaces, and the corners of the
    export's tests (dense and sequence inputs, 16- and 64-bit, no affine, group fallback),
    plus a layer whose groups do not fit on chip (the multi-kernel path of a one-stage
    graph)."""
    cases = _cases()
    for name in [n for n in cases if n.startswith("random")]:
        del cases[name]
    spaces = [load_space("evonorm_b"), load_space("evonorm_s")]
    cases.update(
        {
            f"random{i}": (g, (4, 8, 3, 3), {"groups": 4})
            for i, g in enumerate(screened_random_graphs(spaces, 50, seed=11))
        }
    )
    cases["ln_relu_off_chip"] = (baselines.get("ln_relu"), (2, 8, 40, 40), {})
    return cases


@pytest.mark.slow
def test_the_kernel_path_matches_graphnormact_in_the_interpreter(tmp_path):
    """Outputs, gradients of x and of every parameter, running buffers after three
    training steps and eval outputs, to 1e-4; state dicts load both ways; every module says
    once that it ran its kernels in triton's interpreter."""
    cases = _kernel_cases()
    report, back = replay_in_a_clean_interpreter(
        tmp_path, cases, kernel_export, env=INTERPRETED, timeout=1500
    )
    # Each module once (the interpreter computes in numpy, which warns of the corners'
    # divisions by zero).
    told = {w: n for w, n in report["warnings"].items() if w.startswith("Exported ")}
    assert told == {"Exported runs its Triton kernels in triton's interpreter": len(cases)}

    def tolerance(name):
        return BF16_TOLERANCE if cases[name][2].get("dtype") == torch.bfloat16 else TOLERANCE

    assert {n: e for n, e in report["errors"].items() if not e <= tolerance(n)} == {}
    assert {n: e for n, e in back.items() if not e <= tolerance(n)} == {}


# -- the file on its own ---------------------------------------------------------------------

ALLOWED_IMPORTS = {
    "math",
    "numbers",
    "operator",
    "typing",
    "collections.abc",
    "torch",
    "triton",
    "triton.language",
    "warnings",
}


def imported_modules(source: str) -> set[str]:
    """Every module the source imports, at any depth."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("name", ["evonorm_b0", "evonorm_s0", "bn_relu", "dyt"])
def test_the_file_imports_torch_triton_math_typing_and_warnings_only(name):
    source = kernel_export(baselines.get(name))
    modules = imported_modules(source)
    assert modules <= ALLOWED_IMPORTS and {"torch", "triton"} <= modules
    tree = ast.parse(source)
    top = {
        alias.name
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert "triton" not in top  # imported on the first launch only
    # The kernels are commented: their pointers, and one block comment per stage.
    assert re.search(r"x_ptr, .*  # x, y \(N, C, S\) contiguous", source)
    plan = generate(baselines.get(name).canonical()).launch
    for mode in ("train", "eval"):
        for kernel in plan[mode]["reduce"]:
            assert re.search(rf"def {kernel['name']}\((?:\n .*)*\n +# Stage \d \(", source)
        for kernel in plan[mode]["backward_reduce"]:
            assert re.search(rf"def {kernel['name']}\((?:\n .*)*\n +# Backward, stage \d", source)


AOT_CHILD = r"""
import math, re, subprocess, tempfile
import triton, triton.language as tl
from pathlib import Path
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# What the file's own launcher runs at the docstring's shape, for sm_90a.
layer = load(sys.argv[1], "layer")
kernels, plan = layer._kernels(layer.GRAPH), layer._PLAN
n, c, h, w = 128, 64, 56, 56
s, groups, dtype = h * w, 32, torch.bfloat16
jobs = []
tile = layer.on_chip_tile(plan, (n, c, h, w), groups, dtype)
if tile:
    for name in ("fused_forward", "fused_backward"):
        jobs.append((name, {"AFFINE": True, "CBLOCK": tile.cblock, "SBLOCK": tile.sblock},
                     tile.num_warps))
else:
    block, _ = layer.stage_block(s)
    for mode in ("train", "eval"):
        jobs += [(k["name"], {"BLOCK": block}, None) for k in plan[mode]["reduce"]]
        jobs += [(k["name"], {"AFFINE": True, "BLOCK": block}, None)
                 for k in plan[mode]["backward_reduce"]]
        launch = layer.channel_launch(n, c, s)
        jobs.append((f"backward_{mode}", {"AFFINE": True, "BLOCK": launch.block,
                                          "SPLIT": launch.split}, None))
    jobs.append(("forward", {"AFFINE": True, "BLOCK": layer.forward_block(n * c * s)}, None))

def signature(fn, constexprs):
    types = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            types[arg] = "constexpr"
        elif arg in ("x_ptr", "y_ptr", "dy_ptr", "dx_ptr"):
            types[arg] = "*bf16"
        elif arg.endswith("_ptr"):
            types[arg] = "*fp32"
        else:
            types[arg] = "fp32" if arg == "eps" else "i32"
    return types

cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
figures = {}
for name, constexprs, warps in jobs:
    fn = getattr(kernels, name)
    constexprs = {"COMPUTE": tl.float32, **constexprs}
    options = dict(layer.OPTIONS, **({"num_warps": warps} if warps else {}))
    compiled = triton.compile(ASTSource(fn, signature(fn, constexprs), constexprs),
                              target=GPUTarget("cuda", 90, 32), options=options)
    assert ".target sm_90a" in compiled.asm["ptx"], name
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True,
                               text=True, check=True).stdout
    resources = dict(re.findall(r"(REG|LOCAL):(\d+)", usage))
    figures[name] = [int(resources["REG"]), int(resources.get("LOCAL", 0))]
print(json.dumps(figures))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["evonorm_b0", "evonorm_s0", "bn_relu", "gn_relu"])
def test_the_file_compiles_for_sm90a_on_its_own_with_the_figures_it_quotes(tmp_path, name):
    """The kernels compile from the exported file alone (its launcher's block sizes at the
    docstring's shape); registers and spills equal the figures its docstring gives, which
    export_source measured through the package's compiler."""
    path = tmp_path / "layer.py"
    path.write_text(export_source(baselines.get(name), kernels=True))
    doc = " ".join(path.read_text().split())
    quoted = re.search(
        r"(\d+) kernels, at most (\d+) registers per thread, (\d+) bytes spilled", doc
    )
    assert quoted and "compiled ahead of time for sm_90a at x of (128, 64, 56, 56) bfloat16" in doc
    figures = run_child(tmp_path, LOAD + AOT_CHILD, str(path))
    assert len(figures) == int(quoted[1])
    assert max(registers for registers, _ in figures.values()) == int(quoted[2])
    assert max(spills for _, spills in figures.values()) == int(quoted[3]) == 0


def test_the_docstring_quotes_stored_figures_only_for_these_kernels():
    graph = baselines.get("evonorm_b0")
    expected = compile_layer(graph, max_spill_bytes=2**31).figures()
    digest = expected["kernel_hash"]
    for stored in [
        {**FIGURES, "kernel_hash": "0" * 20},  # kernels generated by another version
        {**FIGURES, "kernel_hash": digest, "target": "sm_80"},
        {**FIGURES, "kernel_hash": digest, "kernels": 0},  # not compiled
        {**FIGURES, "kernel_hash": digest, "shape": '2, 8"""; import os'},  # not a shape
        {**FIGURES, "kernel_hash": digest, "registers": "1 registers\nimport os"},
    ]:
        doc = export_source(graph, kernels=True, compiled=stored)
        assert f"at most {expected['registers']} registers" in doc
        assert "(128, 64, 56, 56)" in doc and "(2, 8, 4, 4)" not in doc
        assert "import os" not in doc
    assert "(2, 8, 4, 4) float32" in kernel_export(graph)


def test_a_layer_the_generator_cannot_compile_is_refused(monkeypatch):
    from evonorm_search.codegen import source

    monkeypatch.setattr(source, "unsupported", lambda graph: "no derivative rule for op 'x'")
    with pytest.raises(GraphError, match=r"cannot export the kernels of .*no derivative rule"):
        export_source(baselines.get("evonorm_s0"), kernels=True)
    assert export_source(baselines.get("evonorm_s0"))  # the torch-only export still works


# -- state dicts between the three forms --------------------------------------------------

STATE_CHILD = r"""
kernel, plain = load(sys.argv[1], "kernel"), load(sys.argv[2], "plain")
reference = torch.load(sys.argv[3], weights_only=True)
errors = {}
for first, second in [(kernel, plain), (plain, kernel)]:
    a = first.Exported(8, groups=4)
    a.load_state_dict(reference["state"], strict=True)  # GraphNormAct -> a
    a.train()
    a(reference["x"])  # a training step moves the running estimates
    b = second.Exported(8, groups=4).eval()
    b.load_state_dict(a.state_dict(), strict=True)  # a -> b
    a.eval()
    key = f"{first.__name__}->{second.__name__}"
    with torch.no_grad():
        errors[key] = max(error(b(reference["x"]), a(reference["x"])),
                          state_error(b.state_dict(), a.state_dict()))
    torch.save(b.state_dict(), f"{key}.pt")
print(json.dumps(errors))
"""


@pytest.mark.parametrize("name", ["evonorm_b0", "bn_relu", "evonorm_s0"])
def test_state_dicts_move_between_the_kernel_export_the_torch_only_one_and_graphnormact(
    tmp_path, name
):
    graph = baselines.get(name)
    (tmp_path / "kernel.py").write_text(kernel_export(graph))
    (tmp_path / "plain.py").write_text(export_source(graph, "Exported"))
    layer = GraphNormAct(graph, 8, groups=4, backend="eager")
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    x = torch.randn(4, 8, 3, 3)
    torch.save({"state": layer.state_dict(), "x": x}, tmp_path / "reference.pt")
    errors = run_child(tmp_path, LOAD + STATE_CHILD, "kernel.py", "plain.py", "reference.pt")
    assert errors == {"kernel->plain": 0.0, "plain->kernel": 0.0}
    for key in errors:  # and back into GraphNormAct
        back = GraphNormAct(graph, 8, groups=4, backend="eager").eval()
        back.load_state_dict(torch.load(tmp_path / f"{key}.pt", weights_only=True), strict=True)
        layer.train()
        layer(x)  # the same training step
        layer.eval()
        torch.testing.assert_close(back(x), layer(x), atol=1e-6, rtol=1e-6)
        layer.load_state_dict(torch.load(tmp_path / "reference.pt", weights_only=True)["state"])


# -- without triton, side by side, under torch.compile -------------------------------------

NO_TRITON_CHILD = r"""
sys.modules["triton"] = None  # `import triton` raises ImportError
kernel, plain = load(sys.argv[1], "kernel"), load(sys.argv[2], "plain")
a, b = kernel.Exported(8, groups=4), plain.Exported(8, groups=4)
worst = 0.0
for step in range(3):
    x = torch.randn(4, 8, 3, 3, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    a(x).square().sum().backward()
    b(x2).square().sum().backward()
    worst = max(worst, error(x.grad, x2.grad), state_error(a.state_dict(), b.state_dict()))
a.eval(), b.eval()
worst = max(worst, error(a(x), b(x)))
print(json.dumps({"error": worst, "told": told}))
"""


def test_without_triton_the_layer_runs_eagerly_and_says_so_once(tmp_path):
    graph = baselines.get("evonorm_b0")
    (tmp_path / "kernel.py").write_text(kernel_export(graph))
    (tmp_path / "plain.py").write_text(export_source(graph, "Exported"))
    # even where the interpreter was asked for
    result = run_child(tmp_path, LOAD + NO_TRITON_CHILD, "kernel.py", "plain.py", env=INTERPRETED)
    told = ["Exported runs in PyTorch ops: triton is not installed"]
    assert result == {"error": 0.0, "told": told}


SIDE_BY_SIDE_CHILD = r"""
modules = [load(path, f"layer{i}") for i, path in enumerate(sys.argv[1:])]
reference = torch.load("reference.pt", weights_only=True)
errors = []
for module, (name, state) in zip(modules, reference["states"]):
    layer = getattr(module, name)(8, groups=4)
    layer.load_state_dict(state)
    x = reference["x"].clone().requires_grad_()
    y = layer(x)
    y.square().sum().backward()
    errors.append(max(error(y, reference["y"][name]), error(x.grad, reference["grad"][name])))
namespaces = [module.NAMESPACE for module in modules]
registered = [hasattr(getattr(torch.ops, ns), "fused_forward") for ns in namespaces]
print(json.dumps({"errors": errors, "namespaces": namespaces, "registered": registered,
                  "told": told}))
"""


def test_exported_layers_load_side_by_side(tmp_path):
    """Two layers, and the first again under another class name, in one process: each
    runs its own kernels through its own custom ops."""
    exports = [("evonorm_b0", "EvolvedB0"), ("evonorm_s0", "EvolvedS0"), ("evonorm_b0", "Again")]
    x = torch.randn(4, 8, 3, 3)
    states, outputs, grads, paths = [], {}, {}, []
    for i, (name, class_name) in enumerate(exports):
        paths.append(tmp_path / f"layer{i}.py")
        paths[-1].write_text(kernel_export(baselines.get(name), class_name))
        layer = GraphNormAct(baselines.get(name), 8, groups=4, backend="eager")
        with torch.no_grad():
            layer.v1.add_(torch.randn(8) * 0.3)
        states.append((class_name, layer.state_dict()))
        xi = x.clone().requires_grad_()
        outputs[class_name] = layer(xi)
        outputs[class_name].square().sum().backward()
        grads[class_name] = xi.grad
    torch.save({"states": states, "x": x, "y": outputs, "grad": grads}, tmp_path / "reference.pt")
    result = run_child(tmp_path, LOAD + SIDE_BY_SIDE_CHILD, *map(str, paths), env=INTERPRETED)
    assert max(result["errors"]) <= TOLERANCE, result["errors"]
    b0, s0 = (
        f"evonorm_{baselines.get(n).canonical().structural_hash()}"
        for n in ("evonorm_b0", "evonorm_s0")
    )
    assert result["namespaces"] == [b0, s0, b0] and all(result["registered"])
    assert sorted(result["told"]) == [
        f"{name} runs its Triton kernels in triton's interpreter"
        for name in ("Again", "EvolvedB0", "EvolvedS0")
    ]


COMPILE_CHILD = r"""
first, second = load(sys.argv[1], "first"), load(sys.argv[2], "second")
torch.manual_seed(0)
net = torch.nn.Sequential(first.Exported(8, groups=4), torch.nn.Conv2d(8, 8, 3, padding=1),
                          second.Exported(8, groups=4))
twin = copy.deepcopy(net)
compiled = torch.compile(twin, fullgraph=True)
worst = 0.0
for step in range(2):
    x = torch.randn(4 + step, 8, 5, 5)
    net.zero_grad(), twin.zero_grad()
    y, y2 = net(x), compiled(x)
    y.square().sum().backward()
    y2.square().sum().backward()
    grads = {k: p.grad for k, p in net.named_parameters()}
    grads2 = {k: p.grad for k, p in twin.named_parameters()}
    worst = max(worst, error(y2, y), state_error(grads2, grads),
                state_error(twin.state_dict(), net.state_dict()))
net.eval(), twin.eval()
with torch.no_grad():
    worst = max(worst, error(compiled(x), net(x)))
print(json.dumps({"error": worst, "told": sorted(set(t for t in told if "runs" in t))}))
"""


def test_the_layer_runs_under_torch_compile_on_the_cpu(tmp_path):
    """fullgraph: the path's choice traces as constants; training (buffers included) and
    eval agree with the uncompiled modules."""
    (tmp_path / "first.py").write_text(kernel_export(baselines.get("evonorm_b0")))
    (tmp_path / "second.py").write_text(kernel_export(baselines.get("evonorm_s0")))
    result = run_child(tmp_path, LOAD + "import copy\n" + COMPILE_CHILD, "first.py", "second.py")
    assert result["error"] <= 1e-5
    assert result["told"] == [
        "Exported runs in PyTorch ops on cpu tensors (its Triton kernels run CUDA tensors, or "
        "any under TRITON_INTERPRET=1)"
    ]


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_export_kernels_quotes_the_stored_compile_figures(sqlite_url, tmp_path):
    trained, _, _ = _store_with_candidates(sqlite_url)
    graph = baselines.get("evonorm_s0")
    figures = compile_layer(graph, shape=(32, 16, 8, 8), dtype="float32").figures()
    with Store(sqlite_url) as store:
        store.update_candidate(trained, compiled=figures)
    output = tmp_path / "evolved.py"
    result = CliRunner().invoke(
        cli,
        [
            "export",
            str(trained),
            "-o",
            str(output),
            "--kernels",
            "--class-name",
            "EvolvedS0",
            "--db",
            sqlite_url,
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"wrote {output}: class EvolvedS0 with its Triton kernels, "
        f"candidate {trained} of search demo\n"
    )
    source = output.read_text()
    assert imported_modules(source) <= ALLOWED_IMPORTS
    for line in (
        "search: demo",
        f"candidate: {trained}",
        "mean_score: 0.5625",
        "compiled ahead of time for sm_90a at x of (32, 16, 8, 8) float32",
        f"{figures['kernels']} kernels, at most {figures['registers']} registers",
    ):
        assert line in " ".join(source.split()), line
    assert source == export_source(
        graph,
        "EvolvedS0",
        kernels=True,
        compiled=figures,
        provenance=_provenance(sqlite_url, trained),
    )


def _provenance(url, candidate):
    from evonorm_search.export import provenance_of

    with Store(url, readonly=True) as store:
        return provenance_of(store.candidate(candidate))
