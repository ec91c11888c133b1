"""The query commands: status, pareto, show and db upgrade, and their one-line errors."""

import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from evonorm_search.cli import cli
from evonorm_search.store import Store

from store_data import populate

PNG = b"\x89PNG\r\n\x1a\n"


def run(*args, env=None):
    result = CliRunner().invoke(cli, list(args), prog_name="evonorm-search", env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'evonorm.db'}"
    with Store(url) as store:
        history = populate(store, candidates=80)
    return url, history


def test_status_of_every_search_and_of_one(filled):
    url, history = filled
    code, out, _ = run("status", "--db", url, "--format", "json")
    assert code == 0 and [s["name"] for s in json.loads(out)] == ["demo"]
    code, out, _ = run("status", "demo", "--db", url, "--format", "json")
    info = json.loads(out)
    for key in (
        "name",
        "budget",
        "trained",
        "rejected",
        "duplicates",
        "running",
        "failed",
        "best",
        "funnel",
    ):
        assert key in info
    assert info["trained"] == len(history.scores)
    assert info["best"]["id"] in history.scores
    code, out, _ = run("status", "demo", "--db", url)
    assert code == 0 and "rejected by stage" in out and f"{info['trained']} of budget" in out


def test_pareto_as_table_json_csv_and_plot(filled, tmp_path):
    url, history = filled
    code, out, _ = run("pareto", "demo", "--db", url, "--format", "json")
    rows = json.loads(out)
    assert code == 0 and rows
    assert {"id", "formula", "scores"} <= set(rows[0])
    assert all(r["id"] in history.scores for r in rows)
    code, out, _ = run("pareto", "demo", "--db", url, "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["id"]) for r in table] == [r["id"] for r in rows]
    assert set(table[0]) == {"id", "resnet", "mobilenet", "efficientnet", "mean_score", "formula"}
    code, out, _ = run("pareto", "demo", "--db", url)
    assert code == 0 and f"front of demo: {len(rows)} candidates" in out
    plot = tmp_path / "front.png"
    code, _, err = run(
        "pareto", "demo", "--db", url, "--objectives", "mean,nodes", "--plot", str(plot)
    )
    assert code == 0 and f"wrote {plot}" in err
    assert plot.read_bytes().startswith(PNG) and plot.stat().st_size > 10_000


def test_show_with_lineage_and_drawing(filled, tmp_path):
    url, history = filled
    child = next(i for i in history.ids if history.parent[i] is not None)
    code, out, _ = run("show", str(child), "--db", url, "--format", "json")
    record = json.loads(out)
    assert code == 0 and record["id"] == child
    assert record["lineage"][1]["id"] == history.parent[child]
    assert record["lineage"][0]["mutation"] == history.mutation[child]
    drawing = tmp_path / "graph.svg"
    code, out, _ = run("show", str(child), "--db", url, "--draw", str(drawing))
    assert code == 0 and "lineage" in out and drawing.read_text().startswith("<?xml")


def test_db_upgrade_creates_a_database_and_env_names_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, out, _ = run("db", "upgrade", env={"EVONORM_DB": url})
    assert code == 0 and "(new database) -> 0005" in out
    code, out, _ = run("status", "--format", "json", env={"EVONORM_DB": url})
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["status", "nope"], "unknown search 'nope' (searches: demo)"),
        (["pareto", "nope"], "unknown search 'nope'"),
        (["pareto", "demo", "--objectives", "bogus"], "bad objectives bogus"),
        (["show", "424242"], "unknown candidate id 424242"),
        (["show", "abc"], "'abc' is not a valid integer"),
        (["pareto", "demo", "--plot", "front.gif"], "cannot draw front.gif"),
    ],
)
def test_bad_requests_are_one_line(filled, args, message):
    url, _ = filled
    code, _, err = run(*args, "--db", url)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "url, message",
    [
        ("sqlite:///{tmp}/absent.db", "no database at sqlite:///"),
        ("nonsense", "malformed database URL"),
        ("postgresql://me:hunter2@127.0.0.1:1/x", "cannot use postgresql://me:***@"),
    ],
)
def test_unusable_databases_are_one_line_without_passwords(tmp_path, url, message):
    """Through the installed entry point, as a user runs it: no traceback, exit 2."""
    exe = [sys.executable, "-m", "evonorm_search.cli"]
    result = subprocess.run(
        [*exe, "status", "--db", url.format(tmp=tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "hunter2" not in result.stderr
    assert not (tmp_path / "absent.db").exists()


def _damaged(directory, kind: str):
    """A file that is not a usable database: text, or a real database cut short."""
    path = directory / f"{kind}.db"
    if kind == "text":
        path.write_text("name,score\nbn_relu,0.91\n")
    else:
        url = f"sqlite:///{directory / 'whole.db'}"
        with Store(url) as store:
            populate(store, candidates=40)
        data = (directory / "whole.db").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    return path


COMMANDS = [
    ["status"],
    ["status", "demo"],
    ["pareto", "demo"],
    ["show", "3"],
    ["compile", "3"],
    ["export", "3", "-o", "{dir}/layer.py"],
    ["report", "demo", "-o", "{dir}/report.html"],
    ["retune", "demo", "--top", "1"],
    ["resume", "demo"],
    ["run", "--name", "new"],
    ["baselines", "evaluate"],
    ["db", "upgrade"],
    ["dashboard", "--port", "0"],
]


@pytest.mark.parametrize(
    "kind, problem",
    [("text", "file is not a database"), ("truncated", "database disk image is malformed")],
)
def test_a_file_that_is_not_a_database_is_one_line_and_left_untouched(tmp_path, kind, problem):
    import hashlib

    path = _damaged(tmp_path, kind)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for command in COMMANDS:
        args = [a.format(dir=tmp_path) for a in command]
        code, out, err = run(*args, "--db", f"sqlite:///{path}")
        assert code == 2, (command, out, err)
        assert err.strip() == f"evonorm-search: error: cannot use sqlite:///{path}: {problem}", (
            command,
            err,
        )
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, command
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(kind)) == [path.name]
    # Through the installed entry point too, as a user runs it.
    command = [sys.executable, "-m", "evonorm_search", "status", "--db", f"sqlite:///{path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
