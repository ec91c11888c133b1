"""The search end to end, in real processes: `run` on a local Ray, the compile stage and
training recorded in the store, `resume` after SIGKILL at random moments, one-line errors
before anything starts."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="the search runs on Ray")

# A space small enough that a candidate trains in a few seconds on the digits.
TINY_SPACE = """
description = "a tiny space for the search's tests"
tensor = "image"

[graph]
max_nodes = 6
ops = ["add", "mul", "div", "max", "neg", "sigmoid", "tanh"]
statistics = ["mean", "std"]
axes = ["batch", "instance", "group"]

[proxy]
dataset = "digits"
preset = "tiny"
architectures = ["resnet"]
groups = 4
validation = 200

[training]
batch_size = 32
quality_steps = 4
steps = 8

[rejection]
quality_accuracy = 0.0

[search]
population = 4
tournament = 2

[compile]
reference_shape = [32, 16, 8, 8]
dtype = "float32"
"""


def space_and_url(directory: Path, text: str, name: str) -> tuple[Path, str]:
    """A space file ``name`` holding ``text`` in ``directory``, and the URL of a database
    beside it."""
    path = directory / name
    path.write_text(text)
    return path, f"sqlite:///{directory / 'search.db'}"


@pytest.fixture
def tiny(tmp_path):
    return space_and_url(tmp_path, TINY_SPACE, "tiny.toml")


def cli(*args: str, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evonorm_search", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def status(url: str, name: str) -> dict:
    out = cli("status", name, "--db", url, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def rows(url: str, query: str) -> list[tuple]:
    """Read-only: never creates the database file under the process that writes it."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return connection.execute(query).fetchall()


def trained_so_far(url: str) -> int:
    """Trained candidates in the database, 0 before the search has created it."""
    try:
        return rows(url, "SELECT COUNT(*) FROM candidates WHERE status = 'trained'")[0][0]
    except sqlite3.Error:  # no file or no table yet
        return 0


def tiny_database(directory: Path, searches: dict[str, int]) -> str:
    """A database in ``directory`` where the real pipeline trained the baselines and ran
    ``searches`` (name: budget) on the tiny space (kernels compiled, not verified)."""
    space = directory / "tiny.toml"
    space.write_text(TINY_SPACE)
    url = f"sqlite:///{directory / 'search.db'}"
    runs = [("baselines", "evaluate")]
    runs += [("run", "--name", name, "--budget", str(budget)) for name, budget in searches.items()]
    for args in runs:
        out = cli(*args, "--space", str(space), "--no-verify", "--db", url)
        assert out.returncode == 0, out.stderr[-3000:]
    return url


def new_driver(space_path: Path, url: str, name: str, **settings) -> tuple:
    """A store at ``url`` with a new search ``name`` created as `run` creates it, and a
    driver over it (``settings``: SearchSettings' fields; trials unverified): returns
    (store, settings, space, driver); the caller closes the store."""
    from evonorm_search.hashing import proxy_key
    from evonorm_search.search.driver import SearchSettings, _Driver, settings_space
    from evonorm_search.store import Store

    settings = SearchSettings(name=name, space=str(space_path), verify=False, **settings)
    space = settings_space(settings)
    store = Store(url)
    store.create_search(
        name,
        space=settings.space,
        strategy=settings.strategy,
        seed=settings.seed,
        budget=settings.budget,
        architectures=space.proxy.architectures,
        proxy_key=proxy_key(space),
        config=settings.to_config(),
    )
    return store, settings, space, _Driver(store, settings, space, None)


@pytest.mark.slow
def test_a_search_runs_to_its_budget_and_records_the_compile_stage(tiny):
    space, url = tiny
    out = cli(
        "run",
        "--name",
        "first",
        "--space",
        str(space),
        "--budget",
        "3",
        "--objectives",
        "resnet,cost",
        "--db",
        url,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "search first: completed, 3/3 trained" in out.stdout
    summary = status(url, "first")
    assert summary["status"] == "completed" and summary["trained"] == 3
    assert set(summary["stopped_at"]) >= {"static", "functional", "numeric", "compile", "quality"}
    trained = rows(url, "SELECT id, compiled FROM candidates WHERE status = 'trained'")
    assert len(trained) == 3
    for _, compiled in trained:  # every trained candidate has its compile figures
        figures = json.loads(compiled)
        assert figures["verified"] and figures["spill_bytes"] == 0
        assert figures["traffic_fwd"] >= 2 and figures["traffic_bwd"] >= 3
    nodes = rows(url, "SELECT DISTINCT node FROM evaluations")
    assert len(nodes) == 1 and nodes[0][0]  # each evaluation names the Ray node
    shown = cli("show", str(trained[0][0]), "--db", url)
    assert "compiled" in shown.stdout and "traffic" in shown.stdout

    # The front the driver maintained is over accuracy (max) and compiled traffic (min).
    points = rows(
        url,
        "SELECT id, scores, bytes_per_element, on_front FROM candidates WHERE status = 'trained'",
    )
    vectors = np.array([[json.loads(scores)["resnet"], -cost] for _, scores, cost, _ in points])
    dominated = [any((v >= u).all() and (v > u).any() for v in vectors) for u in vectors]
    assert [bool(on) for *_, on in points] == [not d for d in dominated]
    front = json.loads(cli("pareto", "first", "--db", url, "--format", "json").stdout)
    by_id = {i: cost for i, _, cost, _ in points}
    assert front and all(p["objectives"]["cost"] == by_id[p["id"]] for p in front)


@pytest.mark.slow
def test_resume_after_sigkill_trains_exactly_the_budget(tiny):
    """SIGKILL the whole process group at random moments (screening, compiling, training
    alike), then resume: exactly the budget trained, nothing trained twice."""
    space, url = tiny
    budget = 20  # about 35 s of searching here; a fast machine needs less (see the kill below)
    rng = np.random.default_rng(int(time.time()))
    args = ["--space", str(space), "--budget", str(budget), "--no-verify", "--db", url]
    command = [sys.executable, "-m", "evonorm_search", "run", "--name", "killed", *args]
    for attempt in range(2):
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        # A random moment, but never after a random share of the budget is trained: a fast
        # machine trains all 20 inside 15 s, and a kill after the end tests nothing.
        deadline = time.monotonic() + float(rng.uniform(5, 15))
        enough = int(rng.integers(1, budget))
        while time.monotonic() < deadline and trained_so_far(url) < enough:
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if attempt == 0:
            assert status(url, "killed")["trained"] < budget, "the kill came too late"
        command = [sys.executable, "-m", "evonorm_search", "resume", "killed", "--db", url]
    if status(url, "killed")["status"] != "completed":  # the second kill may come after the end
        out = cli("resume", "killed", "--db", url)
        assert out.returncode == 0, out.stderr[-3000:]
    summary = status(url, "killed")
    assert summary["status"] == "completed" and summary["trained"] == budget
    assert summary["running"] == 0 and summary["queued"] == 0
    # Evaluations are recorded with the fitness, in one transaction: one per trained
    # candidate and architecture, never two.
    counts = rows(url, "SELECT candidate_id, COUNT(*) FROM evaluations GROUP BY candidate_id")
    assert all(n == 1 for _, n in counts)
    trained = {i for (i,) in rows(url, "SELECT id FROM candidates WHERE status = 'trained'")}
    assert trained <= {i for i, _ in counts}


@pytest.mark.slow
def test_one_worker_and_a_seed_make_the_same_candidates(tiny, tmp_path):
    space, _ = tiny
    sequences = []
    for run_number in range(2):
        url = f"sqlite:///{tmp_path / f'seeded{run_number}.db'}"
        out = cli(
            "run",
            "--name",
            "seeded",
            "--space",
            str(space),
            "--budget",
            "2",
            "--no-verify",
            "--seed",
            "7",
            "--db",
            url,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        sequences.append(
            rows(
                url, "SELECT structural_hash, status, stage, scores FROM candidates ORDER BY birth"
            )
        )
    assert sequences[0] == sequences[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "nope"], "unknown search space 'nope'"),
        (["--strategy", "cmaes"], "Invalid value for '--strategy'"),
        (["--objectives", "resnet,speed"], "bad objectives resnet, speed"),
        (["--data", "cifar10", "--data-dir", "/nonexistent"], "CIFAR-10 data not found"),
        (["--budget", "0"], "Invalid value for '--budget'"),
        (["--name", "a/b"], "bad search name 'a/b'"),
    ],
)
def test_bad_requests_fail_before_anything_starts(tmp_path, args, message):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    name = [] if "--name" in args else ["--name", "ok"]
    out = cli("run", *name, *args, "--db", url, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "none.db").exists()  # nothing written, no Ray started


def test_an_existing_name_points_to_resume(tmp_path):
    from evonorm_search.store import Store

    url = f"sqlite:///{tmp_path / 'search.db'}"
    with Store(url) as store:
        store.create_search(
            "taken",
            space="evonorm_b",
            strategy="evolution",
            seed=0,
            budget=1,
            architectures=["resnet"],
            proxy_key="k",
        )
    out = cli("run", "--name", "taken", "--db", url, timeout=120)
    assert out.returncode == 2
    assert "a search named 'taken' exists already: `evonorm-search resume taken`" in out.stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_search_on_a_two_node_cluster_trains_on_both_nodes(tiny, tmp_path):
    """A real two-node Ray cluster on this machine, one CPU per node: two concurrent
    one-CPU trials can only run one per node.  Token authentication on (Ray's default for
    local clusters since 2.59), with a token of the test's own.  While that cluster runs, a
    search without ``--address`` starts a private Ray of its own instead of joining it."""
    import secrets
    import shutil

    space, url = tiny
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port = free_port()
    start = [
        [
            ray,
            "start",
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--include-dashboard=false",
        ],
        [ray, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1"],
    ]
    try:
        for command in start:
            out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
            assert out.returncode == 0, out.stderr[-2000:]
        out = cli(
            "run",
            "--name",
            "cluster",
            "--space",
            str(space),
            "--budget",
            "4",
            "--no-verify",
            "--workers",
            "2",
            "--address",
            f"127.0.0.1:{port}",
            "--db",
            url,
            env=env,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        out = cli(
            "run",
            "--name",
            "private",
            "--space",
            str(space),
            "--budget",
            "2",
            "--no-verify",
            "--workers",
            "2",
            "--db",
            url,
            env=env,
        )
        assert out.returncode == 0, out.stderr[-3000:]
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=180)
    assert status(url, "cluster")["trained"] == 4
    assert status(url, "private")["trained"] == 2
    query = "SELECT node, COUNT(*) FROM evaluations JOIN candidates ON candidate_id = candidates.id"
    query += " JOIN searches ON search_id = searches.id WHERE searches.name = '{}' GROUP BY node"
    nodes = rows(url, query.format("cluster"))
    assert len(nodes) == 2, nodes
    # On one node: its own (joining the cluster would have failed, or used both nodes).
    assert len(rows(url, query.format("private"))) == 1


@pytest.mark.slow
def test_a_search_writes_to_postgresql(tiny):
    from conftest import postgres_database

    space, _ = tiny
    databases = postgres_database()
    url = next(databases)
    try:
        out = cli(
            "run",
            "--name",
            "pg",
            "--space",
            str(space),
            "--budget",
            "2",
            "--no-verify",
            "--db",
            url,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        summary = status(url, "pg")
        assert summary["status"] == "completed" and summary["trained"] == 2
    finally:
        databases.close()


def damaged_cifar10(directory: Path, characters: int = 2000) -> Path:
    """CIFAR-10's files, each a pickle naming a numpy dtype of ``characters`` letters: loading
    one in a trial raises a DataError quoting the name (a message over 2,000 characters)."""
    import struct

    name = "x" * characters
    payload = (
        b"\x80\x02cnumpy\ndtype\nX" + struct.pack("<I", len(name)) + name.encode() + b"\x85R."
    )  # dtype("xxx..."), through the loader's own allowed globals
    directory.mkdir()
    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]:
        (directory / file).write_bytes(payload)
    return directory


@pytest.mark.slow
def test_a_trial_raising_a_long_error_fails_its_candidate_and_the_search_goes_on(tiny, tmp_path):
    """On PostgreSQL, which refuses text longer than its column: every trial raises a
    2,000-character error, each candidate is failed with a readable reason (the message's
    start, and its length) and the whole message as its detail, and the search screens on
    to its cap instead of stopping at the first failure."""
    from evonorm_search.store import Store

    from conftest import postgres_database

    space, _ = tiny
    data = damaged_cifar10(tmp_path / "cifar-10-batches-py")
    databases = postgres_database()
    url = next(databases)
    try:
        out = cli(
            "run",
            "--name",
            "long-errors",
            "--space",
            str(space),
            "--data",
            "cifar10",
            "--data-dir",
            str(data),
            "--budget",
            "1",
            "--max-candidates",
            "12",
            "--no-verify",
            "--db",
            url,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        summary = status(url, "long-errors")
        assert summary["status"] == "exhausted" and summary["screened"] == 12
        assert summary["failed"] >= 2, summary
        with Store(url, readonly=True) as store:
            failed = [
                store.candidate(c["id"])
                for c in store.history("long-errors")
                if c["status"] == "failed"
            ]
    finally:
        databases.close()
    for candidate in failed:
        assert candidate["stage"] == "trial"
        assert candidate["reason"].startswith(f"DataError: {data}/")
        assert "not a CIFAR-10 python batch: data type 'xxx" in candidate["reason"]
        assert candidate["reason"].endswith("characters; the detail has them)")
        assert 300 < len(candidate["reason"]) < 400
        assert len(candidate["detail"]) > 2000 and candidate["detail"].endswith("x' not understood")


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resume_finishes(tiny):
    space, url = tiny
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evonorm_search",
            "run",
            "--name",
            "interrupted",
            "--space",
            str(space),
            "--budget",
            "8",
            "--no-verify",
            "--db",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    # A budget well beyond the first trained candidate: on a fast machine a budget of 4 was
    # all trained before the interrupt took effect (a completed search, rightly exit 0).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until the first candidate is trained
        time.sleep(0.25)
        try:
            if rows(url, "SELECT id FROM candidates WHERE status = 'trained'"):
                break
        except sqlite3.OperationalError:  # the database or its tables are not made yet
            pass
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    summary = status(url, "interrupted")
    assert summary["status"] == "stopped" and summary["running"] == 0  # none left running
    assert "search interrupted: stopped" in out
    resumed = cli("resume", "interrupted", "--db", url)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert status(url, "interrupted")["trained"] == 8


def kill_a_trial(deadline: float) -> bool:
    """SIGKILL the first trial process (a Ray Tune function trainable) that appears."""
    while time.monotonic() < deadline:
        for line in subprocess.run(
            ["ps", "-eo", "pid,args"], capture_output=True, text=True
        ).stdout.splitlines():
            pid, _, command = line.strip().partition(" ")
            if command.startswith("ray::ImplicitFunc"):
                os.kill(int(pid), signal.SIGKILL)
                return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("retries", [2, 0])
def test_a_dead_trial_is_retried_then_failed_and_the_search_goes_on(tiny, retries):
    space, url = tiny
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evonorm_search",
            "run",
            "--name",
            "crash",
            "--space",
            str(space),
            "--budget",
            "3",
            "--no-verify",
            "--trial-retries",
            str(retries),
            "--db",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert kill_a_trial(time.monotonic() + 120)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    summary = status(url, "crash")
    assert summary["status"] == "completed" and summary["trained"] == 3
    # (Layers that diverged failed too, at the stage where they did: not the trial's.)
    failed = rows(
        url, "SELECT stage, reason FROM candidates WHERE status = 'failed' AND stage = 'trial'"
    )
    if retries:
        assert failed == []  # the retry trained it
    else:
        assert failed == [("trial", "the trial failed (1 attempt: its process died or raised)")]


def test_a_duplicate_of_a_trained_candidate_is_told_with_its_scores(tiny):
    """The driver tells a strategy a structural duplicate's fitness (the twin's), as an FEC
    hit's, also after a resume: told as a failure, Optuna's samplers keep proposing it."""
    from evonorm_search.graph import LayerGraph
    from evonorm_search.search.driver import _Driver
    from evonorm_search.search.strategies import Strategy
    from evonorm_search.search.trial import run_trial

    class Scripted(Strategy):
        """Proposes these formulas in turn; records what it is told."""

        name = "scripted"
        formulas = (
            "x * sigmoid(v1 * x) / std_group(x)",  # trained first
            "sigmoid(x * v1) * x / std_group(x)",  # the same structure
            "max(x - mean_batch(x), 0) / std_instance(x)",
        )

        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.told = []

        def ask(self):
            return self._proposal(LayerGraph.parse(self.formulas[len(self.told)]))

        def tell(self, proposal, candidate, scores) -> None:
            self.told.append(scores)

        def restore(self, history) -> None:
            pass

    store, settings, space, driver = new_driver(*tiny, "dup", budget=3)
    driver.strategy = Scripted(space, driver.architectures, 0)
    config = driver.suggest("first")
    report = run_trial(config["request"])
    assert report["status"] == "trained", report
    driver.complete("first", {"report": json.dumps(report)}, error=False)
    assert driver.suggest("third") is not None  # screened the duplicate on the way
    assert driver.strategy.told == [report["scores"], report["scores"]]
    resumed = _Driver(store, settings, space, None)
    resumed.restore()
    twin = LayerGraph.parse(Scripted.formulas[1]).structural_hash()
    assert resumed.trained_structures[twin] == report["scores"]


def test_relative_paths_are_resolved_before_trials_run_elsewhere(tiny, tmp_path):
    """A trial runs in a directory of its own: a relative space file or data directory,
    given from the search's working directory, still names the same file there."""
    space, url = tiny
    out = cli(
        "run",
        "--name",
        "relative",
        "--space",
        space.name,
        "--budget",
        "1",
        "--no-verify",
        "--db",
        url,
        cwd=space.parent,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert status(url, "relative")["trained"] == 1
    config = json.loads(rows(url, "SELECT config FROM searches WHERE name = 'relative'")[0][0])
    assert config["space"] == str(space)
    from evonorm_search.search.driver import SearchSettings

    assert SearchSettings("x", data_dir="data").data_dir == str(Path.cwd() / "data")


def test_a_search_stopped_at_its_candidate_cap_trains_its_requeued_candidates(tiny):
    """Candidates left queued by a stop were screened already: `resume` trains them even
    when the screened count has reached --max-candidates, then stops there."""
    from evonorm_search.search.driver import _Driver

    store, settings, space, driver = new_driver(*tiny, "capped", budget=3, max_candidates=1)
    first = driver.suggest("first")["request"]["candidate"]
    assert driver.finished()  # the cap: nothing more is screened
    store.update_candidate(first, status="queued")  # as a stop leaves a trial in flight
    resumed = _Driver(store, settings, space, None)
    resumed.restore()
    assert not resumed.finished()
    assert resumed.suggest("again")["request"]["candidate"] == first
    assert resumed.finished()


@pytest.mark.slow
def test_a_worker_time_budget_holds_across_resumes_and_nothing_is_proposed_again(tiny):
    """`--worker-hours` is kept in the database and counted over every sitting: a resume at
    its budget stops at once; with a bigger one the search goes on where its random stream
    stopped (before, a resumed random search replayed its first proposals as duplicates)."""
    space, url = tiny
    out = cli(
        "run",
        "--name",
        "timed",
        "--space",
        str(space),
        "--strategy",
        "random",
        "--budget",
        "1000",
        "--worker-hours",
        "0.006",
        "--no-verify",
        "--db",
        url,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "search timed: exhausted (worker-time budget of 0.006 h reached" in out.stdout
    first = status(url, "timed")
    assert first["worker_hours_budget"] == 0.006 and first["worker_seconds"] >= 0.006 * 3600
    assert first["trained"] >= 1 and first["trained_per_worker_hour"] > 0
    assert first["worker_by_fate"]["trained"] > 0
    assert 0 < sum(first["worker_by_fate"].values()) < first["worker_seconds"]
    shown = cli("status", "timed", "--db", url).stdout
    assert "worker time by fate" in shown and "trained per worker-hour" in shown
    sitting = rows(url, "SELECT graph FROM candidates ORDER BY birth")
    from evonorm_search.store import Store

    with Store(url) as store:  # what another command keeps in the config (`transfer`'s)
        store.set_search_config(
            "timed", {**store.search("timed")["config"], "transfer": {"layers": []}}
        )

    out = cli("resume", "timed", "--db", url)  # at its budget: nothing more
    assert out.returncode == 0 and "worker-time budget of 0.006 h reached" in out.stdout
    with Store(url, readonly=True) as store:  # survives a resume
        assert store.search("timed")["config"]["transfer"] == {"layers": []}
    assert len(rows(url, "SELECT id FROM candidates")) == len(sitting)

    # The first sitting ends with its trials in flight, past its budget: the new budget is
    # what it spent and another 0.012 h, so that the second sitting has time to propose.
    budget = round(first["worker_seconds"] / 3600 + 0.012, 4)
    out = cli("resume", "timed", "--worker-hours", str(budget), "--db", url)
    assert out.returncode == 0, out.stderr[-3000:]
    second = status(url, "timed")
    assert second["worker_hours_budget"] == budget and second["worker_seconds"] >= budget * 3600
    assert second["worker_seconds"] < budget * 3600 + first["worker_seconds"]
    after = rows(url, "SELECT graph FROM candidates ORDER BY birth")[len(sitting) :]
    assert len(after) >= 3 and after[:3] != sitting[:3]
    # A replayed stream proposes the first sitting's graphs again in the same order. Duplicates
    # as such prove nothing here: the tiny space holds few distinct layers.
    paired = list(zip(after, sitting, strict=False))
    replayed = sum(again == before for again, before in paired)
    assert replayed < len(paired) / 2, (replayed, len(paired))
