import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evonorm_search import LayerGraph, baselines
from evonorm_search.cli import cli
from evonorm_search.hashing import functional_hash


def run(*args):
    result = CliRunner().invoke(cli, list(args), prog_name="evonorm-search")
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_commands():
    code, out, _ = run("--help")
    assert code == 0
    for command in ("spaces", "baselines", "formula"):
        assert command in out


def test_spaces():
    code, out, _ = run("spaces", "--format", "json")
    assert code == 0
    spaces = {s["name"]: s for s in json.loads(out)}
    assert {"evonorm_b", "evonorm_s", "sequence"} <= set(spaces)
    assert "batch" not in spaces["evonorm_s"]["axes"]
    code, out, _ = run("spaces")
    assert code == 0 and "evonorm_b" in out and "sequence" in out


def test_baselines():
    code, out, _ = run("baselines", "--format", "json")
    assert code == 0
    zoo = {b["name"]: b for b in json.loads(out)}
    assert list(zoo) == baselines.names()
    assert zoo["evonorm_s0"]["formula"] == "x * sigmoid(v1 * x) / std_group(x)"
    assert zoo["bn_relu"]["structural_hash"] == baselines.get("bn_relu").structural_hash()
    code, out, _ = run("baselines")
    assert code == 0 and "evonorm_b0" in out


def test_formula_reports_canonical_form():
    code, out, _ = run("formula", "v1 * x * sigmoid(x * v1) / std_group(x)", "--format", "json")
    assert code == 0
    info = json.loads(out)
    assert info["formula"] == "sigmoid(x * v1) * (x * v1) / std_group(x)"
    assert info["shape_class"] == "(N, C, S)"
    assert info["functional_hash"] == functional_hash(LayerGraph.parse(info["formula"]))
    assert info["nodes"] == 5 and info["batch_statistics"] is False
    assert info["input_nodes"] == 6  # v1 * x and x * v1 merge in the canonical form
    assert info["space_violations"]["evonorm_s"] == []
    # Numbered as given: the input's std_group(x) is its node 8.
    assert info["space_violations"]["sequence"] == ["node 8: axis 'group' is not in this space"]
    assert info["graph"]["format"] == "evonorm-graph/1"


def test_formula_may_start_with_a_minus():
    code, out, err = run("formula", "-x / std_group(x)", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["formula"] == "-x / std_group(x)"


def test_formula_checks_spaces_on_the_genome_dead_nodes_included():
    dead_batch = {
        "format": "evonorm-graph/1",
        "nodes": [{"op": "mean", "axis": "batch", "inputs": [0]}, {"op": "max", "inputs": [0, 1]}],
    }
    code, out, _ = run(
        "formula", json.dumps(dead_batch), "--space", "evonorm_s", "--format", "json"
    )
    assert code == 0
    info = json.loads(out)
    assert info["nodes"] == 1 and info["input_nodes"] == 2
    assert info["space_violations"] == {"evonorm_s": ["node 4: axis 'batch' is not in this space"]}


def test_bare_command_shows_the_help():
    code, _, err = run()
    assert code == 2 and "Commands:" in err and "error:" not in err


def test_formula_accepts_json_and_a_chosen_space():
    g = baselines.get("evonorm_b0")
    code, out, _ = run("formula", g.to_json(), "--space", "evonorm_s", "--format", "json")
    assert code == 0
    info = json.loads(out)
    assert info["structural_hash"] == g.structural_hash()
    assert info["batch_statistics"] is True
    assert list(info["space_violations"]) == ["evonorm_s"]
    assert "axis 'batch'" in info["space_violations"]["evonorm_s"][0]
    code, out, _ = run("formula", "max(x, 0)")
    assert code == 0 and "structural hash" in out and "max(x, 0)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["formula", "x ** 2"], "operator Pow"),
        (["formula", "mean_batch(x)"], "must vary like x"),
        (["formula", '{"format": "evonorm-graph/1", "nodes": ['], "not valid JSON"),
        (
            ["formula", '{"format": "evonorm-graph/1", "nodes": [{"op": "cos", "inputs": [0]}]}'],
            "unknown op 'cos'",
        ),
        (["formula", "max(x, 0)", "--space", "nope"], "unknown search space 'nope'"),
        (["formula", "max(x, 0)", "--space", "/no/such.toml"], "does not exist"),
        (["formula"], "Missing argument 'EXPR'"),
        (["formula", "x", "--format", "xml"], "Invalid value for '--format'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("evonorm-search: error: ")
    assert message in err


@pytest.mark.slow
def test_console_script_in_a_real_process():
    script = Path(sys.executable).with_name("evonorm-search")
    if not script.exists():
        pytest.skip(f"no installed console script beside {sys.executable}")
    exe = [str(script)]
    ok = subprocess.run(
        [*exe, "formula", "x / std_group(x)", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["nodes"] == 2
    bad = subprocess.run([*exe, "formula", "x +"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert (
        bad.stderr.strip() == "evonorm-search: error: formula is not valid syntax: invalid syntax"
    )
    assert "Traceback" not in bad.stderr
