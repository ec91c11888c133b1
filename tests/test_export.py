"""Exported layers: standalone modules that compute what GraphNormAct computes.

The exported modules run in a fresh interpreter that never imports evonorm_search, against
reference tensors GraphNormAct computed here; generated code is refused for hostile graphs,
class names and database rows before any is written.
"""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from evonorm_search import GraphError, GraphNormAct, LayerGraph, Node, baselines, eager
from evonorm_search.cli import cli
from evonorm_search.export import TEMPLATES, export_source, load_layer
from evonorm_search.graph import as_graph
from evonorm_search.ops import AXES, ELEMENTWISE, STATISTICS
from evonorm_search.rejection import screened_random_graphs
from evonorm_search.space import load_space
from evonorm_search.store import Store, StoreError

TOLERANCE = 1e-5
HOSTILE_OP = {
    "format": "evonorm-graph/1",
    "nodes": [{"op": "__import__('os').system('x')", "inputs": [0]}],
}
HOSTILE_CLASS_NAME = "X(): pass\nimport os\nclass Y"

# How far a tensor (or a state dict) is from a reference: in the child below and here.
MEASURES = r'''
import math

def error(a, b):
    """Largest difference relative to 1 + |b|; equal NaNs and infinities count as equal."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    if a.shape != b.shape or a.dtype != b.dtype:
        return math.inf
    a, b = a.detach().double(), b.detach().double()
    same = (a == b) | (a.isnan() & b.isnan())
    diff = ((a - b).abs() / (1 + b.abs())).masked_fill(same, 0.0).nan_to_num(math.inf)
    return diff.max().item() if diff.numel() else 0.0

def state_error(a, b):
    if list(a) != list(b):
        return math.inf
    return max([error(a[k], b[k]) for k in a], default=0.0)
'''
_measures: dict = {}
exec(MEASURES, _measures)
error = _measures["error"]

# Runs in a fresh interpreter: imports every exported module by path, replays the parent's
# training steps and eval pass on it, prints the largest error per case and the warnings
# the modules gave as JSON, and saves the trained state dicts for the parent to load into
# GraphNormAct.
CHILD = (
    MEASURES
    + r"""
import importlib.util, json, sys, warnings
import torch

told = []
warnings.simplefilter("always")
warnings.showwarning = lambda message, *args, **kwargs: told.append(str(message))

cases = torch.load(sys.argv[1], weights_only=True)
errors, trained = {}, {}
for name, case in cases.items():
    spec = importlib.util.spec_from_file_location(f"exported_{name}", case["path"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    layer = getattr(module, case["class_name"])(case["channels"], **case["kwargs"])
    worst = state_error(layer.state_dict(), case["fresh"])
    attributes = (layer.groups, layer.eps, layer.momentum)
    worst = max(worst, 0.0 if list(attributes) == case["attributes"] else math.inf)
    layer.load_state_dict(case["initial"], strict=True)
    for step in case["steps"]:
        layer.zero_grad()
        x = step["x"].clone().requires_grad_()
        y = layer(x)
        (y.float() * step["w"]).sum().backward()
        worst = max(worst, error(y, step["y"]), error(x.grad, step["x_grad"]))
        grads = {k: p.grad for k, p in layer.named_parameters() if p.grad is not None}
        worst = max(worst, state_error(grads, step["grads"]))
    worst = max(worst, state_error(layer.state_dict(), case["trained"]))
    layer.eval()
    with torch.no_grad():
        worst = max(worst, error(layer(case["eval_x"]), case["eval_y"]))
    errors[name] = worst
    trained[name] = layer.state_dict()
assert "evonorm_search" not in sys.modules
torch.save(trained, sys.argv[2])
print(json.dumps({"errors": errors, "warnings": {w: told.count(w) for w in sorted(set(told))}}))
"""
)


def _randomize(layer, generator):
    """Parameters near their initial values, of both signs for v0, so that every one matters."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.add_(
                torch.randn(p.shape, generator=generator),
                alpha=0.5 if name in ("v0", "v1") else 0.1,
            )


def _reference_case(graph, shape, *, dtype=torch.float32, seed=0, **kwargs):
    """What GraphNormAct does: three training steps, then eval mode, in tensors."""
    generator = torch.Generator().manual_seed(seed)
    layer = GraphNormAct(graph, shape[1], momentum=0.2, backend="eager", **kwargs)
    fresh = {k: v.clone() for k, v in layer.state_dict().items()}
    _randomize(layer, generator)
    initial = {k: v.clone() for k, v in layer.state_dict().items()}

    def sample(step):
        scale = torch.rand(shape[1], generator=generator) * 2 + 0.5
        offset = torch.randn(shape[1], generator=generator)
        view = (1, -1, *[1] * (len(shape) - 2))
        x = torch.randn(shape, generator=generator) * scale.view(view) + offset.view(view)
        return (x + step).to(dtype)

    steps = []
    for step in range(3):
        layer.zero_grad()
        x = sample(step).requires_grad_()
        y = layer(x)
        w = torch.randn(y.shape, generator=generator)
        (y.float() * w).sum().backward()
        grads = {k: p.grad.clone() for k, p in layer.named_parameters() if p.grad is not None}
        steps.append({"x": x.detach(), "w": w, "y": y.detach(), "x_grad": x.grad, "grads": grads})
    layer.eval()
    eval_x = sample(0.5)
    with torch.no_grad():
        eval_y = layer(eval_x)
    return layer, {
        "channels": shape[1],
        "kwargs": {"momentum": 0.2, **kwargs},
        "fresh": fresh,
        "attributes": [layer.groups, layer.eps, layer.momentum],
        "initial": initial,
        "steps": steps,
        "trained": layer.state_dict(),
        "eval_x": eval_x,
        "eval_y": eval_y,
    }


def _cases():
    """Every baseline on the tensors it is meant for, 20 random graphs of the evonorm_b
    space, and the corners: dense and sequence inputs, 16- and 64-bit, no affine, a group
    fallback."""
    shapes = {"image": (4, 8, 3, 5), "any": (4, 8, 3, 5), "sequence": (3, 8, 6)}
    cases = {
        name: (baselines.get(name), shapes[baselines.describe(name).tensor], {})
        for name in baselines.names()
    }
    random_graphs = screened_random_graphs([load_space("evonorm_b")], 20, seed=7)
    cases.update(
        {f"random{i}": (g, (4, 8, 3, 3), {"groups": 4}) for i, g in enumerate(random_graphs)}
    )
    cases.update(
        {
            "in_relu_dense": (baselines.get("in_relu"), (6, 8), {}),
            "bn_relu_dense": (baselines.get("bn_relu"), (6, 8), {}),
            "evonorm_s0_bf16": (
                baselines.get("evonorm_s0"),
                (4, 8, 3, 3),
                {"dtype": torch.bfloat16, "groups": 4},
            ),
            "evonorm_b0_fp64": (
                baselines.get("evonorm_b0"),
                (4, 8, 3, 3),
                {"dtype": torch.float64},
            ),
            "all_batch_kinds_no_affine": (
                "(x - mean_batch(x)) / std_batch(x) + x / rms_batch(x * v1) + mean_batch(v0)",
                (5, 6, 2, 2),
                {"affine": False},
            ),
            "group_fallback": (
                "x / std_group(x) + mean_layer(x) * rms_channel(x)",
                (2, 12, 3, 3),
                {"groups": 8, "eps": 1e-3},
            ),
            "every_statistic": (EVERY_STATISTIC, (4, 8, 3, 3), {"groups": 2}),
        }
    )
    return cases


# Every statistic on every axis, of x and of narrower inputs, and exp: with the other cases,
# every template runs.
EVERY_STATISTIC = " + ".join(
    [
        f"{stat}_{axis}({arg})"
        for stat in STATISTICS
        for axis in AXES
        for arg in ("x", "v1 * v1 + 0")
    ]
    + ["exp(-square(x))"]
)


def test_the_cases_run_every_template():
    used = {
        (node.op, node.axis)
        for graph, _, _ in _cases().values()
        for node in as_graph(graph).canonical().nodes
    }
    assert used == set(TEMPLATES)


def test_templates_cover_the_registry():
    assert set(TEMPLATES) == {(op, None) for op in ELEMENTWISE} | {
        (stat, axis) for stat in STATISTICS for axis in AXES
    }


def replay_in_a_clean_interpreter(tmp_path, cases, source_of, env=None, timeout=300):
    """Export each case (name: (graph, shape, options)) with ``source_of(graph)``, replay
    GraphNormAct's steps on it in a fresh interpreter (CHILD) and load the state it trained
    back into GraphNormAct.  Returns the child's report (largest error per case, warnings)
    and per case the largest error of GraphNormAct's eval output from that state.  The
    report's warnings count each message."""
    replayed, references = {}, {}
    for name, (graph, shape, options) in cases.items():
        path = tmp_path / f"{name}.py"
        path.write_text(source_of(graph))
        options = dict(options)
        dtype = options.pop("dtype", torch.float32)
        references[name], case = _reference_case(graph, shape, dtype=dtype, **options)
        replayed[name] = {**case, "path": str(path), "class_name": "Exported"}
    torch.save(replayed, tmp_path / "cases.pt")
    (tmp_path / "child.py").write_text(CHILD)
    out = subprocess.run(
        [sys.executable, "child.py", "cases.pt", "trained.pt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=timeout,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert set(report["errors"]) == set(cases)
    # Exported -> GraphNormAct: the state the exported module trained, in a fresh layer.
    trained = torch.load(tmp_path / "trained.pt", weights_only=True)
    back = {}
    for name, reference in references.items():
        layer = GraphNormAct(
            reference.graph,
            reference.num_channels,
            groups=reference.groups,
            eps=reference.eps,
            momentum=reference.momentum,
            affine=reference.affine,
            backend="eager",
        ).eval()
        layer.load_state_dict(trained[name], strict=True)
        with torch.no_grad():
            back[name] = error(layer(replayed[name]["eval_x"]), replayed[name]["eval_y"])
    return report, back


def test_exported_modules_match_graphnormact_in_a_clean_interpreter(tmp_path):
    """Outputs, input and parameter gradients, running buffers after training and eval
    outputs agree; state dicts load both ways, strictly; the modules say nothing."""
    report, back = replay_in_a_clean_interpreter(
        tmp_path, _cases(), lambda graph: export_source(graph, "Exported")
    )
    assert report["warnings"] == {}
    assert {name: e for name, e in report["errors"].items() if not e <= TOLERANCE} == {}
    assert {name: e for name, e in back.items() if not e <= TOLERANCE} == {}


def test_source_imports_only_torch_with_one_line_per_node():
    graph = LayerGraph.parse(EVERY_STATISTIC)
    program = graph.canonical()
    source = export_source(graph, "EveryStatistic")
    tree = ast.parse(source)
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name.split(".")[0] for name in imported} <= {
        "torch",
        "math",
        "numbers",
        "operator",
        "collections",
    }
    (cls,) = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name != "NormAct"
    ]
    assert cls.name == "EveryStatistic"
    assert ast.get_docstring(cls).splitlines()[0] == program.formula()
    (forward,) = [f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "forward"]
    nodes = [
        s
        for s in forward.body
        if isinstance(s, ast.Assign) and re.fullmatch(r"t\d+", s.targets[0].id)
    ]
    assert [s.targets[0].id for s in nodes] == [f"t{i}" for i in range(4, program.output + 1)]
    assert all(s.lineno == s.end_lineno for s in nodes)
    # The eager runtime is carried verbatim: GraphNormAct runs the same code.
    code = Path(eager.__file__).read_text().split("from torch import Tensor, nn\n", 1)[1]
    assert code.strip() in source
    assert [base.id for base in cls.bases] == ["NormAct"]


def test_provenance_stays_inside_the_docstring():
    escape = 'x"""\nimport os\nos.system("echo owned")\n"""'
    provenance = {
        "search": escape,
        'key"""\\': "ends in a backslash \\",
        "nul": "a\x00b\u2028",
        "scores": {'resnet\'"""': 0.5},
        "candidate": 7,
    }
    source = export_source("x * v1", provenance=provenance)
    tree = ast.parse(source)
    assert not any(
        isinstance(node, ast.Import) and node.names[0].name == "os" for node in ast.walk(tree)
    )
    assert isinstance(tree.body[0], ast.Expr)  # the module's docstring, then code
    assert not any(isinstance(node, ast.Expr) for node in tree.body[1:])
    (cls,) = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name != "NormAct"
    ]
    doc = ast.get_docstring(cls, clean=False)
    for key, value in provenance.items():
        rendered = value if isinstance(value, str) else repr(value)
        assert f"{key}: {rendered}" in doc


def test_hostile_graphs_and_class_names_are_refused():
    with pytest.raises(GraphError, match="unknown op"):
        export_source(HOSTILE_OP)
    for inputs in ([7], ["0); import os; (0"], [-1]):
        with pytest.raises(GraphError, match="input"):
            export_source({"format": "evonorm-graph/1", "nodes": [{"op": "neg", "inputs": inputs}]})
    for name in (HOSTILE_CLASS_NAME, "class", "torch", "Tensor", "ValueError", "_private", 3, ""):
        with pytest.raises(ValueError, match="class name"):
            export_source("x * v1", name)
    # A graph built around LayerGraph's own checks meets the exporter's.
    for node, message in [
        (Node("__import__('os').system('x')", (0,)), "no export template"),
        (Node("std", (0,), "group)\nimport os\n("), "no export template"),
        (Node("mul", ("x", 0)), "indices of earlier nodes"),
        (Node("neg", (-1,)), "indices of earlier nodes"),
    ]:
        with pytest.raises(GraphError, match=message):
            export_source(LayerGraph._trusted((node,)))


def _store_with_candidates(url):
    """A search with a trained EvoNorm-S0 and rows no search would write: a hostile graph
    and a graph that is not JSON; their ids."""
    with Store(url) as store:
        store.create_search(
            "demo",
            space="evonorm_b",
            strategy="evolution",
            seed=0,
            budget=2,
            architectures=["resnet", "mobilenet"],
            proxy_key="test",
        )
        graph = baselines.get("evonorm_s0")
        trained = store.add_candidate(
            "demo", graph=graph.to_json(), formula=graph.formula(), status="queued"
        )
        store.set_fitness(trained, {"resnet": 0.625, "mobilenet": 0.5})
        hostile = store.add_candidate("demo", graph=json.dumps(HOSTILE_OP), status="rejected")
        garbage = store.add_candidate("demo", graph="x ** 2", status="rejected")
    return trained, hostile, garbage


def test_load_layer_reads_the_stored_graph(sqlite_url):
    trained, hostile, _ = _store_with_candidates(sqlite_url)
    layer = load_layer(sqlite_url, trained, 12, groups=8)
    assert isinstance(layer, GraphNormAct) and layer.groups == 6
    assert layer.program == baselines.get("evonorm_s0").canonical()
    with pytest.raises(StoreError, match="unknown candidate id 999"):
        load_layer(sqlite_url, 999, 8)
    with pytest.raises(GraphError, match=f"candidate {hostile} is not a valid layer"):
        load_layer(sqlite_url, hostile, 8)


def test_cli_export_refuses_bad_input_with_one_line(sqlite_url, tmp_path):
    trained, hostile, garbage = _store_with_candidates(sqlite_url)
    output = tmp_path / "layer.py"
    for args, message in [
        ([str(hostile)], "is not a valid layer: node 4: unknown op"),
        ([str(garbage)], "is not a valid layer: graph JSON is not valid JSON"),
        (["999"], "unknown candidate id 999"),
        ([str(trained), "--class-name", HOSTILE_CLASS_NAME], "is not a Python identifier"),
        ([str(trained), "-o", str(tmp_path / "missing" / "layer.py")], "cannot write"),
    ]:
        result = CliRunner().invoke(cli, ["export", "-o", str(output), "--db", sqlite_url, *args])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.splitlines()) == 1 and message in result.stderr
        assert not output.exists()


def test_cli_export_writes_a_runnable_module_with_its_provenance(sqlite_url, tmp_path):
    trained, _, _ = _store_with_candidates(sqlite_url)
    output = tmp_path / "evolved.py"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "evonorm_search",
            "export",
            str(trained),
            "-o",
            str(output),
            "--class-name",
            "EvolvedS0",
            "--db",
            sqlite_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"wrote {output}: class EvolvedS0, candidate {trained} of search demo\n"
    namespace = {}
    exec(compile(output.read_text(), str(output), "exec"), namespace)
    exported = namespace["EvolvedS0"](12, groups=8)
    doc = exported.__doc__
    assert doc.startswith(baselines.get("evonorm_s0").canonical().formula())
    for line in (
        "search: demo",
        f"candidate: {trained}",
        "status: trained",
        "scores: {'resnet': 0.625, 'mobilenet': 0.5}",
        "mean_score: 0.5625",
    ):
        assert line in doc
    reference = load_layer(sqlite_url, trained, 12, groups=8, backend="eager")
    reference.load_state_dict(exported.state_dict(), strict=True)
    x = torch.randn(2, 12, 4, 4)
    torch.testing.assert_close(exported(x), reference(x), atol=TOLERANCE, rtol=TOLERANCE)


# Runs in a fresh interpreter: each exported module under torch.compile and torch.export
# against its own eager run, in training (with buffer updates) and in eval mode.
COMPILE_CHILD = r"""
import copy, importlib.util, json, sys
import torch

backend, exports = sys.argv[1], sys.argv[2] == "export"
errors = {}
for path in sys.argv[3:]:
    spec = importlib.util.spec_from_file_location("exported", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    eager = module.Exported(8, groups=4)
    with torch.no_grad():
        eager.v1.uniform_(-2, 2)
    compiled_layer = copy.deepcopy(eager)
    compiled = torch.compile(compiled_layer, backend=backend, fullgraph=True)
    worst = 0.0
    for step in range(3):
        x = torch.randn(4, 8, 5, 5) + step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = eager(xa), compiled(xb)
        ya.square().sum().backward()
        yb.square().sum().backward()
        worst = max(worst, (ya - yb).abs().max().item(), (xa.grad - xb.grad).abs().max().item())
    for a, b in zip(eager.state_dict().values(), compiled_layer.state_dict().values()):
        worst = max(worst, (a - b).abs().max().item())
    eager.eval()
    compiled_layer.eval()
    x = torch.randn(4, 8, 5, 5)
    worst = max(worst, (eager(x) - compiled(x)).abs().max().item())
    for training in (True, False) if exports else ():
        eager.train(training)
        batch, h, w = (torch.export.Dim(name) for name in ("batch", "h", "w"))
        program = torch.export.export(copy.deepcopy(eager), (x,),
                                      dynamic_shapes={"x": {0: batch, 2: h, 3: w}})
        runnable = program.module()
        for shape in ((3, 8, 4, 6), (5, 8, 3, 3)):
            x = torch.randn(shape)
            worst = max(worst, (runnable(x) - eager(x)).abs().max().item())
        for name, buffer in eager.named_buffers():
            worst = max(worst, (buffer - runnable.get_buffer(name)).abs().max().item())
    errors[path] = worst
assert "evonorm_search" not in sys.modules
print(json.dumps(errors))
"""


def _compile_and_export(tmp_path, backend, exports, graphs):
    paths = []
    for i, graph in enumerate(graphs):
        paths.append(tmp_path / f"layer{i}.py")
        paths[-1].write_text(export_source(graph, "Exported"))
    (tmp_path / "child.py").write_text(COMPILE_CHILD)
    out = subprocess.run(
        [sys.executable, "child.py", backend, "export" if exports else "-", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout)
    assert len(errors) == len(graphs) and max(errors.values()) <= TOLERANCE, errors


def test_torch_compile_and_export_agree_with_eager(tmp_path):
    """aot_eager (dynamo and AOT autograd, without code generation) and torch.export with
    dynamic batch and spatial sizes, in training mode (buffers updated) and eval mode."""
    graphs = [
        baselines.get("evonorm_b0"),
        baselines.get("evonorm_s0"),
        "(x - mean_batch(v1 * x)) / rms_instance(x) + mean_layer(x) * std_channel(x)",
    ]
    _compile_and_export(tmp_path, "aot_eager", True, graphs)


@pytest.mark.slow
def test_inductor_compiles_an_exported_layer(tmp_path):
    _compile_and_export(tmp_path, "inductor", False, [baselines.get("evonorm_b0")])


def test_state_dicts_of_exports_before_the_eager_runtime_load_and_compute_the_same():
    """Every zoo layer exported by 7c30a62 (before the eager runtime and the export rewrite),
    trained three steps: its state dict loads strictly into today's export and into
    GraphNormAct, and both give its eval-mode output (``tests/data/export_state_dicts.py``
    wrote the file)."""
    stored = torch.load(Path(__file__).parent / "data" / "export_state_dicts.pt", weights_only=True)
    assert stored["commit"] == "7c30a62" and len(stored["cases"]) >= 10
    for name, case in stored["cases"].items():
        namespace: dict = {"__name__": f"exported_{name}"}
        exec(compile(export_source(baselines.get(name), "Exported"), name, "exec"), namespace)
        channels, groups = case["eval_x"].shape[1], case["groups"]
        for layer in (
            namespace["Exported"](channels, groups=groups, momentum=0.2),
            GraphNormAct(baselines.get(name), channels, groups=groups, momentum=0.2),
        ):
            layer.load_state_dict(case["state"], strict=True)
            with torch.no_grad():
                y = layer.eval()(case["eval_x"])
            torch.testing.assert_close(y, case["eval_y"], rtol=0, atol=1e-6, msg=name)
