"""The compile command: kernels compiled ahead of time for a GPU target, their figures, the
traffic model, the generated source, and one-line errors."""

import json
import sys

import pytest
from click.testing import CliRunner

from evonorm_search import baselines
from evonorm_search.cli import cli
from evonorm_search.codegen.aot import has_cuda_backend
from evonorm_search.codegen.source import generate
from evonorm_search.graph import LayerGraph
from evonorm_search.space import load_space
from evonorm_search.store import Store

from store_data import populate

NO_AOT = "the installed triton has no CUDA backend: no ahead-of-time compilation"


def run(*args):
    result = CliRunner().invoke(cli, list(args), prog_name="evonorm-search")
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def kernel_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EVONORM_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # kernels compile, not interpret
    monkeypatch.setenv("COLUMNS", "200")  # rich folds nothing


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A store whose search ran in the sequence space: its [compile] section differs from
    the command's defaults."""
    url = f"sqlite:///{tmp_path_factory.mktemp('compile') / 'evonorm.db'}"
    with Store(url) as store:
        history = populate(store, "tokens", candidates=12, space_name="sequence")
    return url, history


def test_json_has_every_kernel_and_the_traffic_model():
    graph = baselines.get("evonorm_s0")
    code, out, err = run("compile", graph.formula(), "--no-verify", "--format", "json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["traffic_fwd"], info["traffic_bwd"]) == (2, 3)  # its groups fit on chip
    assert info["kernel_hash"] == generate(graph).digest and info["verified"] is False
    assert (info["target"], info["shape"], info["dtype"]) == (
        "sm_90a",
        [128, 64, 56, 56],
        "bfloat16",
    )
    if not has_cuda_backend():
        pytest.skip(NO_AOT)
    kernels = info["kernels"]
    names = [k["kernel"] for k in kernels]
    assert kernels and len(set(names)) == len(names)  # one entry per kernel
    assert {k["direction"] for k in kernels} == {"forward", "backward"}
    for k in kernels:
        assert k["spill_bytes"] == 0 and 0 < k["registers"] <= 255, k
        assert k["shared_bytes"] >= 0 and k["compile_s"] >= 0, k
    assert info["spill_bytes"] == 0 and info["registers"] == max(k["registers"] for k in kernels)


def test_table_and_source(tmp_path):
    graph = baselines.get("gn_relu")
    folder = tmp_path / "generated"
    code, out, err = run(
        "compile",
        graph.formula(),
        "--no-verify",
        "--dtype",
        "fp32",
        "--shape",
        "8,64,14,14",
        "--source",
        str(folder),
    )
    assert code == 0, err
    source = generate(graph)
    written = folder / f"evonorm_kernels_{source.digest}.py"
    assert written.read_text() == source.text and f"wrote {written}" in err
    assert "traffic: forward 2, backward 3 full-size elements" in out
    assert f"kernel hash: {source.digest}" in out
    if not has_cuda_backend():
        pytest.skip(NO_AOT)
    assert "kernels of max(" in out and "8,64,14,14 float32" in out
    assert "forward" in out and "backward" in out  # the direction column


def test_a_candidate_compiles_at_its_spaces_reference_shape_and_verifies(filled):
    url, history = filled
    trained = next(iter(history.scores))
    code, out, err = run("compile", str(trained), "--db", url, "--format", "json")
    assert code == 0, err
    info = json.loads(out)
    space = load_space("sequence")
    assert info["shape"] == list(space.compile.reference_shape) and info["verified"] is True
    with Store(url, readonly=True) as store:
        graph = LayerGraph.from_json(store.candidate(trained)["graph"])
    assert info["formula"] == graph.formula()
    assert info["kernel_hash"] == generate(graph).digest
    if has_cuda_backend():
        assert info["kernels"] and info["spill_bytes"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["x / std_group(x)", "--shape", "128,64,0,56"], "Invalid value for '--shape'"),
        (["x / std_group(x)", "--shape", "1,2,3,4,5,6"], "2 to 5 comma-separated positive"),
        (["x / std_group(x)", "--shape", "128x64"], "2 to 5 comma-separated positive"),
        (["x / std_group(x)", "--dtype", "int8"], "Invalid value for '--dtype'"),
        (["x / std_group(x)", "--target", "sm_75"], "'sm_75' is not a target of the compiler"),
        (["foo(x) / std_group(x)"], "unknown function 'foo'"),
        (["mean_batch(x)"], "a layer's output must vary like x"),
        (["424242"], "unknown candidate id 424242"),
    ],
)
def test_bad_requests_are_one_line(filled, args, message):
    url, _ = filled
    code, _, err = run("compile", *args, "--db", url, "--no-verify")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("evonorm-search: error: ")


def test_a_refusal_names_its_reason(monkeypatch):
    monkeypatch.setattr(
        "evonorm_search.codegen.compiler.unsupported", lambda graph: "no kernels in this test"
    )
    code, _, err = run("compile", "x / std_group(x)", "--no-verify")
    assert code == 2
    assert err == (
        "evonorm-search: error: cannot compile x / std_group(x): unsupported: no "
        "kernels in this test\n"
    )


def test_without_the_cuda_backend_only_traffic(monkeypatch):
    monkeypatch.setattr("evonorm_search.codegen.aot.has_cuda_backend", lambda: False)
    code, out, err = run("compile", "x / std_group(x)", "--no-verify", "--format", "json")
    assert code == 0 and "no CUDA backend" in err and len(err.strip().splitlines()) == 1
    info = json.loads(out)
    assert info["kernels"] == [] and info["traffic_fwd"] >= 2 and info["traffic_bwd"] >= 3


def test_without_triton(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # what find_spec sees where it is absent
    code, _, err = run("compile", "x / std_group(x)", "--no-verify")
    assert code == 2 and err.startswith("evonorm-search: error: triton is not installed")
    assert len(err.strip().splitlines()) == 1
