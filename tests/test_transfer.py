"""Honest evaluation: the transfer slices that no training reads, `reevaluate` and
`transfer` on the digits (a run checkpointed, SIGKILLed and resumed bitwise, changed settings
refused), and the report's intervals and Holm-corrected comparisons against hand figures."""

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from test_search import TINY_SPACE, cli, rows

from evonorm_search import baselines
from evonorm_search.proxy.data import load_dataset
from evonorm_search.proxy.train import TrainingRun, evaluate, train_candidate
from evonorm_search.search.transfer import transfer_trial
from evonorm_search.space import load_space

TRANSFER = """
[transfer]
networks = ["resnet20"]
steps = 30
batch_size = 32
learning_rate = 0.05
eval_every = 10
seeds = 2
checkpoint_minutes = 1e-9
"""


class Poisoned(torch.Tensor):
    """A tensor that refuses every use: a split no code may read."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"a transfer slice was read ({func.__name__})")


def poisoned(data):
    import dataclasses

    return dataclasses.replace(
        data,
        **{
            name: getattr(data, name).as_subclass(Poisoned)
            for name in (
                "transfer_val_images",
                "transfer_val_labels",
                "transfer_test_images",
                "transfer_test_labels",
            )
        },
    )


def test_no_training_reads_the_transfer_slices(tmp_path, monkeypatch):
    """Every training loop is ``TrainingRun.advance`` on ``Dataset.batches`` (the train split):
    proxy training (quality check included; also re-evaluation's), retune's learning-rate
    trial and a transfer network's training run with the transfer slices poisoned; reading
    them fails."""
    from evonorm_search.search import trial
    from evonorm_search.search.retune import retune_trial

    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPACE + TRANSFER)
    space = load_space(path)
    data = poisoned(load_dataset("digits"))
    runs = train_candidate(baselines.get("bn_relu"), data, space=space, seed=0)
    assert runs["resnet"].status == "completed"
    monkeypatch.setattr(trial, "trial_dataset", lambda *args: data)
    lr_trial = retune_trial(
        {
            "graph": baselines.get("bn_relu").to_json(),
            "space": str(path),
            "dataset": "digits",
            "data_dir": None,
            "preset": None,
            "phase": "lr",
            "learning_rate": 0.05,
            "seed": 0,
            "steps": 8,
        }
    )
    assert 0 <= lr_trial["accuracy"] <= 1
    run = TrainingRun(baselines.get("evonorm_b0"), "resnet20", data, space, 1, 12)
    assert run.advance(12)
    evaluate(run.model, data, "val")  # the search's validation split is readable
    with pytest.raises(AssertionError, match="a transfer slice was read"):
        evaluate(run.model, data, "transfer_val")


def test_an_evaluation_with_batch_statistics_leaves_the_model_alone(tmp_path):
    """Train mode on a copy: each batch of 1,000 normalized by its own statistics, the
    model's running estimates and mode untouched."""
    import torch.nn.functional as F

    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPACE + TRANSFER)
    data = load_dataset("digits")
    run = TrainingRun(baselines.get("bn_relu"), "resnet20", data, load_space(path), 1, 12)
    assert run.advance(12)
    run.model.eval()
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    accuracy, loss = evaluate(run.model, data, "transfer_val", batch_statistics=True)
    assert not run.model.training
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    by_hand = run.model.train()  # the same computation, by hand, after the fact
    with torch.no_grad():
        batches = [
            (by_hand(images), labels) for images, labels in data.evaluation_batches("transfer_val")
        ]
    labels = torch.cat([labels for _, labels in batches])
    logits = torch.cat([logits for logits, _ in batches])
    assert accuracy == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert (accuracy, loss) != evaluate(run.model.eval(), data, "transfer_val")


def request(space_path, **extra):
    settings = {
        "networks": ["resnet20"],
        "steps": 30,
        "batch_size": 32,
        "learning_rate": 0.05,
        "learning_rates": [],
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "eval_every": 10,
        "dataset": "digits",
        "transfer_slice": 150,
        "groups": 4,
    }
    return {
        "candidate": 1,
        "graph": baselines.get("evonorm_b0").to_json(),
        "phase": "final",
        "network": "resnet20",
        "seed": 1,
        "learning_rate": 0.05,
        "space": str(space_path),
        "dataset": "digits",
        "data_dir": None,
        "preset": None,
        "settings": settings,
        "key": "k",
        "checkpoint_minutes": 1e-9,
        "checkpoint": None,
        **extra,
    }


def test_a_transfer_run_resumes_bitwise_from_each_checkpoint(tmp_path):
    """Checkpoints at every curve point (steps 10 and 20); resumed from either, the run
    ends exactly as the uninterrupted one, curve included."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPACE + TRANSFER)
    saved = []
    whole = transfer_trial(request(path), saved.append)
    assert whole["status"] == "completed" and whole["steps"] == 30
    assert [step for step, _ in whole["curve"]] == [10, 20, 30]
    assert [p["step"] for p in saved] == [10, 20]
    assert set(whole["splits"]) == {
        "transfer_val",
        "transfer_test",  # no test split here
        "transfer_val_batch_statistics",
    }
    assert whole["curve"][-1][1] == pytest.approx(whole["splits"]["transfer_val"]["accuracy"])
    for checkpoint in saved:
        resumed = transfer_trial(request(path, checkpoint=checkpoint["state"]), lambda p: None)
        assert resumed["resumed_at"] == checkpoint["step"]
        assert resumed["curve"] == whole["curve"] and resumed["splits"] == whole["splits"]


def write_runs(store, candidate, network, by_seed, key="k", kind_val=None):
    for seed, (val, test) in by_seed.items():
        store.add_evaluation(
            candidate,
            architecture=network,
            dataset="digits",
            preset="transfer",
            seed=seed,
            steps=30,
            status="completed",
            seconds=1.0,
            accuracy=val,
            stage="transfer",
            figures={
                "key": key,
                "phase": "final",
                "learning_rate": 0.05,
                "curve": [[30, val]],
                "transfer_test": {"accuracy": test},
                "test": None,
            },
        )


def test_the_report_matches_a_hand_computation(tmp_path):
    """Two zoo layers and two chosen layers on seeds 1-3: the comparator is the zoo layer
    with the better transfer-validation mean; each chosen layer's paired transfer-test
    difference, its t-interval and Holm-adjusted p-value, worked out by hand (t with 2
    degrees of freedom: P(|T| > t) = 1 - t / sqrt(t^2 + 2))."""
    from evonorm_search.search.driver import SearchSettings
    from evonorm_search.search.transfer import TransferLayer, TransferPlan, transfer_results
    from evonorm_search.search.transfer.plan import comparable_settings, settings_key
    from evonorm_search.store import Store

    url = f"sqlite:///{tmp_path / 'r.db'}"
    settings = {
        "networks": ["resnet20"],
        "learning_rate": 0.05,
        "learning_rates": [],
        "comparator": None,
    }
    key = settings_key(comparable_settings(settings))
    with Store(url) as store:
        store.create_search(
            "s",
            space="evonorm_b",
            strategy="evolution",
            seed=0,
            budget=1,
            architectures=["resnet"],
            proxy_key="p",
            config={"space": "evonorm_b", "dataset": "digits"},
        )
        ids = [store.add_candidate("s", graph="{}", status="trained") for _ in range(4)]
        # (transfer-validation, transfer-test) per seed
        write_runs(
            store, ids[0], "resnet20", {1: (0.80, 0.70), 2: (0.82, 0.72), 3: (0.81, 0.71)}, key
        )  # zoo, the better
        write_runs(
            store, ids[1], "resnet20", {1: (0.60, 0.90), 2: (0.60, 0.90), 3: (0.60, 0.90)}, key
        )  # zoo, worse on val
        write_runs(
            store, ids[2], "resnet20", {1: (0.7, 0.74), 2: (0.7, 0.75), 3: (0.7, 0.76)}, key
        )  # differences .04 .03 .05
        write_runs(
            store, ids[3], "resnet20", {1: (0.7, 0.69), 2: (0.7, 0.73), 3: (0.7, 0.70)}, key
        )  # -.01 .01 -.01
        write_runs(store, ids[3], "resnet20", {4: (0.1, 0.1)}, "other settings")  # not counted
        space = load_space("evonorm_b")
        search = SearchSettings(name="s", space="evonorm_b", dataset="digits")
        plan = TransferPlan(
            search,
            space,
            settings,
            [1, 2, 3],
            [
                TransferLayer("bn_relu", "baseline", ids[0], "{}"),
                TransferLayer("gn_relu", "baseline", ids[1], "{}"),
                TransferLayer("#a", "candidate", ids[2], "{}"),
                TransferLayer("#b", "candidate", ids[3], "{}"),
            ],
        )
        results = transfer_results(store, plan)
    [a_layer, b_layer] = results["layers"][2:]
    interval = a_layer["networks"]["resnet20"]["transfer_test"]["interval"]
    t95 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # 4.302653
    assert interval["mean"] == pytest.approx(0.75)
    assert interval["high"] == pytest.approx(0.75 + t95 * 0.01 / math.sqrt(3))
    assert b_layer["networks"]["resnet20"]["transfer_test"]["by_seed"] == {
        1: 0.69,
        2: 0.73,
        3: 0.70,
    }
    comparison = results["comparisons"]["resnet20"]
    assert comparison["comparator"] == "bn_relu" and comparison["split"] == "transfer_test"
    a, b = comparison["results"]
    p_a, p_b = 1 - math.sqrt(48 / 50), 2 / 3
    assert a["name"] == "#a" and a["p"] == pytest.approx(p_a) and b["p"] == pytest.approx(p_b)
    assert a["p_holm"] == pytest.approx(2 * p_a) and b["p_holm"] == pytest.approx(p_b)
    assert a["difference"]["low"] == pytest.approx(0.04 - t95 * 0.01 / math.sqrt(3))
    assert (a["verdict"], b["verdict"]) == ("better", "no difference")


# -- end to end, in real processes ---------------------------------------------------------


def checkpoints(url):
    path = url.removeprefix("sqlite:///")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT step FROM checkpoints").fetchall()
    except sqlite3.OperationalError:
        return []


@pytest.mark.slow
def test_transfer_end_to_end_with_a_sigkill(tmp_path):
    """A search, its zoo, `reevaluate`, then `transfer` killed (SIGKILL, the whole process
    group) once a run has a checkpoint; the rerun resumes that run from it and trains every
    missing run once; the stored runs equal the worker's result from scratch; other
    settings are refused in one line and nothing is written."""
    space = tmp_path / "tiny.toml"
    space.write_text(TINY_SPACE + TRANSFER.replace("steps = 30", "steps = 100"))
    url = f"sqlite:///{tmp_path / 'search.db'}"
    common = ["--space", str(space), "--no-verify", "--db", url]
    for args in (
        ["baselines", "evaluate", *common],
        ["run", "--name", "s", "--budget", "3", *common],
    ):
        out = cli(*args)
        assert out.returncode == 0, out.stderr[-3000:]
    out = cli("transfer", "s", "--db", url)
    assert (
        out.returncode == 2
        and "no re-evaluated layer: `evonorm-search reevaluate s" in (out.stderr)
        and out.stderr.count("\n") == 1
    )
    out = cli("reevaluate", "s", "--top", "2", "--seeds", "2", "--db", url, "--format", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    ranking = json.loads(out.stdout)
    assert len(ranking) == 2 and all(r["seeds"] == [1, 2] for r in ranking)
    assert ranking[0]["mean"] >= ranking[1]["mean"]
    assert len(rows(url, "SELECT * FROM evaluations WHERE stage = 'reevaluate'")) == 4

    transfer = [
        sys.executable,
        "-m",
        "evonorm_search",
        "transfer",
        "s",
        "--top",
        "1",
        "--layer",
        "relu",
        "--db",
        url,
        "--format",
        "json",
    ]
    process = subprocess.Popen(
        transfer, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not checkpoints(url) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = checkpoints(url)
    assert killed_at, "no checkpoint before the kill"
    finished_before = len(rows(url, "SELECT * FROM evaluations WHERE stage = 'transfer'"))

    out = cli("transfer", "s", "--top", "1", "--layer", "relu", "--db", url, "--format", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(resumes at step" in out.stderr
    assert "Failed to fetch metrics" not in out.stderr  # Tune's noise about its result files
    runs = rows(
        url,
        "SELECT candidate_id, architecture, seed, accuracy, figures, code_version "
        "FROM evaluations WHERE stage = 'transfer' ORDER BY id",
    )
    layers = {r[0] for r in runs}
    report = json.loads(out.stdout)
    labels = [layer["label"] for layer in report["layers"]]
    assert f"#{ranking[0]['id']}" in labels and "relu" in labels
    assert len(labels) == len(set(labels)) == len(layers) >= 3  # the zoo's references too
    assert len(runs) == 2 * len(layers)  # seeds 1, 2: each run once
    assert len({(r[0], r[2]) for r in runs}) == len(runs) > finished_before
    assert not checkpoints(url)  # every run stored, every checkpoint gone
    resumed = [json.loads(r[4]) for r in runs if json.loads(r[4])["resumed_at"]]
    assert resumed and all(r[5].startswith("0.1.0") for r in runs)

    # A resumed run equals the same run from scratch, in this process.
    [(candidate, seed, accuracy, figures)] = [
        (r[0], r[2], r[3], json.loads(r[4])) for r in runs if json.loads(r[4])["resumed_at"]
    ][:1]
    graph = rows(url, f"SELECT graph FROM candidates WHERE id = {candidate}")[0][0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray worker with one CPU: the same summation order
    try:
        fresh = transfer_trial(
            request(
                space,
                graph=graph,
                seed=seed,
                candidate=candidate,
                settings={**request(space)["settings"], "steps": 100},
            ),
            lambda p: None,
        )
    finally:
        torch.set_num_threads(threads)
    assert fresh["splits"]["transfer_val"]["accuracy"] == accuracy
    assert fresh["curve"] == figures["curve"]

    assert report["comparisons"]["resnet20"]["comparator"] is not None
    before = rows(url, "SELECT * FROM evaluations") + rows(
        url, "SELECT id, measured FROM candidates"
    )
    refused = cli("transfer", "s", "--top", "1", "--steps", "61", "--db", url)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "transferred already with other settings" in refused.stderr
    again = cli("transfer", "s", "--top", "1", "--layer", "relu", "--seeds", "2", "--db", url)
    assert again.returncode == 0 and "started" not in again.stderr  # nothing to train
    after = rows(url, "SELECT * FROM evaluations") + rows(
        url, "SELECT id, measured FROM candidates"
    )
    assert after == before


@pytest.fixture
def transferred(tmp_path):
    """A search with two trained candidates and a zoo search on its protocol, transferred
    as `transfer` records it (runs with figures, the layers' transfer records, the search's
    transfer)."""
    from evonorm_search.search.driver import SearchSettings
    from evonorm_search.search.transfer import (
        TRANSFER_KEY,
        TransferLayer,
        TransferPlan,
        record_plan,
    )
    from evonorm_search.search.transfer.plan import comparable_settings, settings_key
    from evonorm_search.store import Store

    url = f"sqlite:///{tmp_path / 't.db'}"
    settings = {
        "networks": ["resnet20"],
        "steps": 30,
        "batch_size": 32,
        "learning_rate": 0.05,
        "learning_rates": [],
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "eval_every": 10,
        "dataset": "digits",
        "transfer_slice": 150,
        "groups": 8,
    }
    key = settings_key(comparable_settings({**settings, "comparator": None}))
    config = {"space": "evonorm_b", "dataset": "digits", "seed": 0}
    with Store(url) as store:
        for name, strategy in (("s", "evolution"), ("baselines-s0", "zoo")):
            store.create_search(
                name,
                space="evonorm_b",
                strategy=strategy,
                seed=0,
                budget=2,
                architectures=["resnet"],
                proxy_key="p",
                config=config,
            )
        bn = baselines.get("bn_relu")
        zoo = store.add_candidate(
            "baselines-s0",
            graph=bn.to_json(),
            formula=bn.formula(),
            status="queued",
            mutation="baseline bn_relu",
        )
        store.set_fitness(zoo, {"resnet": 0.5})
        ids = []
        for layer in ("gn_relu", "evonorm_b0"):
            graph = baselines.get(layer)
            ids.append(
                store.add_candidate(
                    "s", graph=graph.to_json(), formula=graph.formula(), status="queued"
                )
            )
            store.set_fitness(ids[-1], {"resnet": 0.4})
        for cid, results in (
            (zoo, {1: (0.8, 0.7), 2: (0.82, 0.72)}),
            (ids[0], {1: (0.7, 0.75), 2: (0.7, 0.77)}),
            (ids[1], {1: (0.6, 0.6), 2: (0.6, 0.61)}),
        ):
            write_runs(store, cid, "resnet20", results, key)
            store.update_candidate(
                cid, measured={TRANSFER_KEY: {"key": key, "settings": settings, "search": "s"}}
            )
        layers = [TransferLayer(f"#{cid}", "candidate", cid, "{}") for cid in ids]
        record_plan(
            store,
            TransferPlan(
                SearchSettings(name="s", space="evonorm_b", dataset="digits"),
                load_space("evonorm_b"),
                {**settings, "comparator": None},
                [1, 2],
                [*layers, TransferLayer("bn_relu", "baseline", zoo, "{}")],
            ),
        )
    return url, zoo, ids


# `transfer s` with the fixture's settings (nothing left to train).
SAME = [
    "--steps",
    "30",
    "--batch-size",
    "32",
    "--learning-rate",
    "0.05",
    "--eval-every",
    "10",
    "--learning-rates",
    "none",
    "--seeds",
    "2",
]
SAME_SETTINGS = {
    "steps": 30,
    "batch_size": 32,
    "learning_rate": 0.05,
    "eval_every": 10,
    "learning_rates": (),
}


def test_the_transfer_shows_in_status_show_report_and_the_dashboard(transferred, tmp_path):
    from starlette.testclient import TestClient

    from evonorm_search.dashboard import create_app
    from evonorm_search.report import write_report
    from evonorm_search.search.transfer import stored_transfer
    from evonorm_search.store import Store

    url, _, ids = transferred
    with Store(url, readonly=True) as store:
        results = stored_transfer(store, "s")
        assert [layer["label"] for layer in results["layers"]] == [
            f"#{ids[0]}",
            f"#{ids[1]}",
            "bn_relu",
        ]
        assert results["seeds"] == [1, 2]
        comparison = results["comparisons"]["resnet20"]
        assert comparison["comparator"] == "bn_relu"
        assert [c["name"] for c in comparison["results"]] == [f"#{ids[0]}", f"#{ids[1]}"]
        # two seeds: differences .05, .05 (no spread, p = 0) and -.10, -.11
        assert comparison["results"][0]["difference"]["mean"] == pytest.approx(0.05)
        assert comparison["results"][0]["verdict"] == "better"
        assert store.status("s")["after"] == {"transfer": {"layers": 2, "runs": 4}}
        summary = store.candidate(ids[1])["transfer"]
        assert summary[0]["network"] == "resnet20" and summary[0]["seeds"] == [1, 2]
        assert summary[0]["transfer_test"]["mean"] == pytest.approx(0.605)
        report = write_report(store, "s", tmp_path / "r.md")
        with TestClient(create_app(store), base_url="http://127.0.0.1") as client:
            api = client.get("/api/searches/s/transfer").json()
            candidate = client.get(f"/api/candidates/{ids[1]}").json()
            page = client.get("/searches/s").text
    assert api == json.loads(json.dumps(results))
    assert candidate["transfer"] == json.loads(json.dumps(summary))
    assert 'id="transfer-section"' in page
    text = report.read_text()
    assert "## Transfer to bigger networks" in text and "bn\\_relu" in text
    assert (tmp_path / "r_files" / "transfer-resnet20.png").stat().st_size > 10_000
    out = cli("show", str(ids[1]), "--db", url)
    assert out.returncode == 0 and "transfer: accuracy" in out.stdout
    assert "0.6050" in out.stdout
    out = cli("status", "s", "--db", url)
    assert "transfer 4 runs of 2 layers" in out.stdout


def test_a_formula_is_named_for_transfer_outside_the_search_funnel(transferred):
    """`--layer FORMULA` that no candidate computes: a candidate with status ``named`` once
    the transfer runs (labelled by its id), found again by its function on a rerun, and
    absent from the search's counts, funnel, history and canonical forms."""
    from evonorm_search.search.transfer import plan_transfer, record_plan, stored_transfer
    from evonorm_search.store import Store

    url, zoo, ids = transferred
    with Store(url) as store:
        before = (
            store.status("s"),
            store.funnel("s"),
            store.history("s"),
            store.structural_hashes("s"),
        )
        plan = plan_transfer(
            store, "s", top=0, layers=("v1 * x * v1 + x",), seeds=2, **SAME_SETTINGS
        )
        [zoo_layer, formula] = plan.layers
        assert (zoo_layer.label, zoo_layer.candidate) == ("bn_relu", zoo)
        assert formula.candidate is None and formula.kind == "named"
        record_plan(store, plan)
        named = plan.layers[1].candidate
        record = store.candidate(named)
        assert record["status"] == "named" and plan.layers[1].label == f"#{named}"
        assert record["formula"] == formula.label
        again = plan_transfer(
            store,
            "s",
            top=0,
            layers=("x + x * (v1 * v1)",),
            zoo_layers=(),
            seeds=2,
            **SAME_SETTINGS,
        )
        assert [layer.candidate for layer in again.layers] == [named]  # the same function
        after = (
            store.status("s"),
            store.funnel("s"),
            store.history("s"),
            store.structural_hashes("s"),
        )
        assert after[0]["screened"] == before[0]["screened"] == 2
        assert after[1:] == before[1:]
        assert named in [c["id"] for c in store.history("s", named=True)]
        results = stored_transfer(store, "s")
    assert [(layer["label"], layer["kind"]) for layer in results["layers"]] == [
        (f"#{ids[0]}", "candidate"),
        (f"#{ids[1]}", "candidate"),
        ("bn_relu", "baseline"),
        (f"#{named}", "named"),
    ]
    assert results["layers"][3]["networks"]["resnet20"]["transfer_val"]["interval"] is None


def test_a_baseline_search_transfers_its_own_zoo(transferred):
    """`transfer` on the search that `baselines evaluate` made: its own layers are the zoo."""
    from evonorm_search.search.transfer import plan_transfer
    from evonorm_search.store import Store

    url, zoo, _ = transferred
    with Store(url, readonly=True) as store:
        plan = plan_transfer(
            store, "baselines-s0", top=0, zoo_layers=("bn_relu",), seeds=2, **SAME_SETTINGS
        )
    assert [(layer.label, layer.kind, layer.candidate) for layer in plan.layers] == [
        ("bn_relu", "baseline", zoo)
    ]


def test_the_commands_json_is_the_dashboards_transfer(transferred):
    """`transfer NAME --format json` prints the search's transfer as stored, the API's
    answer; a comparator named once stays the search's."""
    from starlette.testclient import TestClient

    from evonorm_search.dashboard import create_app
    from evonorm_search.store import Store

    url, _, ids = transferred
    out = cli(
        "transfer",
        "s",
        "--top",
        "0",
        *SAME,
        "--comparator",
        f"#{ids[1]}",
        "--db",
        url,
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["comparisons"]["resnet20"]["comparator"] == f"#{ids[1]}"
    assert [layer["label"] for layer in printed["layers"]] == [
        f"#{ids[0]}",
        f"#{ids[1]}",
        "bn_relu",
    ]
    with (
        Store(url, readonly=True) as store,
        TestClient(create_app(store), base_url="http://127.0.0.1") as client,
    ):
        api = client.get("/api/searches/s/transfer").json()
    assert printed == api
    again = cli("transfer", "s", "--top", "0", *SAME, "--db", url, "--format", "json")
    assert json.loads(again.stdout) == printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown search 'nope'"),
        (["s", "--networks", "vgg"], "'vgg' is not a transfer network for image tensors"),
        (["s", "--networks", "vit_d4"], "'vit_d4' is not a transfer network for image"),
        (["s", "--networks", ","], "no transfer network given"),
        (["s", "--learning-rates", "0.1,x"], "is not a comma-separated list of numbers"),
        (["s", "--learning-rates", "0.1,-1"], "rates must be > 0"),
        (["s", "--top", "0", "--layer", "nonsense("], "is no zoo name, candidate id or formula"),
        (
            ["s", "--top", "0", "--comparator", "nope", "--layer", "bn_relu"],
            "--comparator 'nope' is not one of the layers",
        ),
        (
            ["s", "--top", "0", *SAME[2:], "--steps", "31"],
            "search 's' was transferred already with other settings (steps 30, asked 31)",
        ),
        (  # the space's default sweep is a change for a search transferred at one rate
            ["s", "--top", "0", *SAME[:8], "--seeds", "2"],
            "(learning rates [], asked [0.03, 0.1, 0.3])",
        ),
        (["s", "--top", "0", "--seeds", "0"], "0 is not in the range x>=1"),
        (["s", "--top", "0", "--zoo", "bn_relu,nope"], "--zoo 'nope' is not a layer of the zoo"),
        (["s", "--top", "0", "--zoo", "gn_relu"], "--zoo gn_relu: the zoo's gn_relu was not "),
        (["s", "--top", "0", "--zoo", "none"], "nothing to transfer for search 's'"),
    ],
)
def test_transfer_errors_are_one_line_and_write_nothing(transferred, args, message):
    url, _, _ = transferred
    before = rows(url, "SELECT * FROM evaluations") + rows(
        url, "SELECT id, measured FROM candidates"
    )
    out = cli("transfer", *args, "--db", url)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    after = rows(url, "SELECT * FROM evaluations") + rows(
        url, "SELECT id, measured FROM candidates"
    )
    assert after == before


def test_the_driver_sweeps_rates_then_trains_the_seeds_at_the_best(transferred):
    """With a sweep, a layer's seed-0 runs at each rate come first; its seeds start once all
    are stored, at the rate best on transfer-validation (a diverged rate scores nothing).
    A checkpoint is kept until its run is stored; a run whose process died starts again
    from it, twice, and then waits for the next rerun."""
    from evonorm_search.search.driver import SearchSettings
    from evonorm_search.search.transfer import TransferLayer, TransferPlan
    from evonorm_search.search.transfer.run import _Transfer
    from evonorm_search.search.units import encode_bytes
    from evonorm_search.store import Store

    url, _, _ = transferred
    space = load_space("evonorm_b")
    settings = {
        "networks": ["resnet20"],
        "steps": 30,
        "batch_size": 32,
        "learning_rate": 0.1,
        "learning_rates": [0.03, 0.1, 0.3],
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "eval_every": 10,
        "dataset": "digits",
        "transfer_slice": 150,
        "groups": 4,
        "comparator": None,
    }
    search = SearchSettings(name="s", space="evonorm_b", dataset="digits")
    with Store(url) as store:
        new = store.add_candidate("s", graph=baselines.get("evonorm_s0").to_json(), status="queued")
        plan = TransferPlan(
            search, space, settings, [1, 2], [TransferLayer(f"#{new}", "candidate", new, "{}")]
        )
        events = []
        source = _Transfer(store, plan, events.append)
        sweep = [source.next_unit() for _ in range(3)]
        assert [u.request["learning_rate"] for u in sweep] == [0.03, 0.1, 0.3]
        assert all(u.request["phase"] == "sweep" and u.request["seed"] == 0 for u in sweep)
        assert source.next_unit() is None and not source.finished()  # the seeds wait

        def report(accuracy, status="completed"):
            return {
                "status": status,
                "steps": 30,
                "seconds": 1.0,
                "curve": [[30, accuracy]],
                "node": "n",
                "code_version": "v",
                "resumed_at": 0,
                "splits": {
                    "transfer_val": {"accuracy": accuracy, "loss": 1.0},
                    "transfer_test": {"accuracy": accuracy, "loss": 1.0},
                },
            }

        source.progress(sweep[0], {"step": 10, "state": encode_bytes(b"state")})
        assert store.checkpoint(sweep[0].request["key"]) == (10, b"state")
        source.complete(sweep[0], report(0.5))
        assert store.checkpoint(sweep[0].request["key"]) is None  # stored: the checkpoint goes
        source.complete(sweep[1], report(0.4))
        assert source.next_unit() is None  # one rate left
        source.complete(sweep[2], {**report(None, "diverged"), "splits": {}})
        seeds = [source.next_unit(), source.next_unit()]
        assert [(u.request["seed"], u.request["learning_rate"]) for u in seeds] == [
            (1, 0.03),
            (2, 0.03),
        ]
        assert source.next_unit() is None
        source.progress(seeds[0], {"step": 20, "state": encode_bytes(b"halfway")})
        for attempt in range(3):  # died three times: started again twice, from step 20
            source.complete(seeds[0], {"error": "its process died"})
            again = source.next_unit()
            if attempt < 2:
                assert again.request["seed"] == 1 and again.request["checkpoint"] == (
                    encode_bytes(b"halfway")
                )
                seeds[0] = again
        assert again is None and "a rerun of the command tries again" in events[-1]
        source.complete(seeds[1], report(0.6))
        assert source.finished() and source.missing() == 1  # seed 1 waits for a rerun
        rerun = _Transfer(store, plan, events.append)
        unit = rerun.next_unit()
        assert (unit.request["seed"], unit.request["checkpoint"]) == (1, encode_bytes(b"halfway"))
        assert "(resumes at step 20)" in events[-1]


def test_reevaluation_ranks_by_the_mean_of_new_seeds(tmp_path):
    """The search's one-seed ranking against the mean over new seeds: a seed that did not
    complete an architecture scores 0 there; FEC twins count once; the interval is the t's."""
    from evonorm_search.search.reevaluate import STAGE, plan_reevaluation, reevaluation_ranking
    from evonorm_search.store import Store

    url = f"sqlite:///{tmp_path / 'r.db'}"
    architectures = ["resnet", "mobilenet"]
    with Store(url) as store:
        store.create_search(
            "s",
            space="evonorm_b",
            strategy="evolution",
            seed=4,
            budget=3,
            architectures=architectures,
            proxy_key="p",
            config={"space": "evonorm_b", "dataset": "digits", "seed": 4},
        )
        lucky = store.add_candidate("s", graph=baselines.get("gn_relu").to_json(), status="queued")
        steady = store.add_candidate("s", graph=baselines.get("bn_relu").to_json(), status="queued")
        store.set_fitness(lucky, {"resnet": 0.9, "mobilenet": 0.9})
        store.set_fitness(steady, {"resnet": 0.6, "mobilenet": 0.6})
        runs = (
            (lucky, 5, (0.5, None)),
            (lucky, 6, (0.5, 0.5)),
            (steady, 5, (0.6, 0.6)),
            (steady, 6, (0.7, 0.5)),
        )
        for cid, seed, accuracies in runs:
            for architecture, accuracy in zip(architectures, accuracies, strict=True):
                store.add_evaluation(
                    cid,
                    architecture=architecture,
                    dataset="digits",
                    preset="tiny",
                    seed=seed,
                    steps=8,
                    stage=STAGE,
                    status="completed" if accuracy else "rejected",
                    seconds=1.0,
                    accuracy=accuracy,
                )
        plan = plan_reevaluation(store, "s", top=2, seeds=3)
        ranking = reevaluation_ranking(store, "s")
    assert plan.seeds == [5, 6, 7]  # the search's seed + 1 .. + 3
    assert sorted(plan.units) == [(lucky, 7), (steady, 7)]  # only what is missing
    assert [r["id"] for r in ranking] == [steady, lucky]  # by the new seeds' mean
    assert ranking[1]["scores"] == {5: 0.25, 6: 0.5}  # mobilenet not completed: 0
    assert ranking[0]["mean"] == pytest.approx(0.6) and ranking[0]["proxy_mean"] == 0.6
    t = math.tan(math.pi * 0.475)  # t(0.975) with 1 df, the Cauchy quantile: 12.706
    assert ranking[1]["high"] == pytest.approx(0.375 + t * 0.125)  # sd/sqrt(2) = 0.125
