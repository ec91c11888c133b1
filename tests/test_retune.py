"""`retune`: the final re-ranking of a search's best candidates and the baseline zoo, with a
learning rate searched by Optuna's TPE on Ray Tune and several final seeds, stored as
evaluations with stage `retune` and the chosen learning rate in the candidate's record."""

import dataclasses
import json
import os
import re
import statistics
from collections import defaultdict

import pytest
import test_baselines_eval
from click.testing import CliRunner
from test_baselines_eval import ZOO, ZOO_SPACE
from test_proxy_data import write_cifar
from test_search import cli as command
from test_search import rows

from evonorm_search import baselines
from evonorm_search.cli import cli
from evonorm_search.errors import StoreError
from evonorm_search.proxy.train import TrainingRun, evaluate
from evonorm_search.search.retune import plan_retune, retune_trial
from evonorm_search.search.trial import effective_space
from evonorm_search.store import Store

pytest.importorskip("ray", reason="retune runs on Ray")

protocol_store = test_baselines_eval.protocol_store  # the fixture: a search and its baselines


def run(*args):
    result = CliRunner().invoke(cli, list(args), prog_name="evonorm-search", env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_the_plan_takes_the_top_candidates_and_the_trained_baselines(protocol_store):
    """Layers: the front's best by mean, then the zoo's layers with scores (a refused one is
    left out; an FEC hit trains and stores under its own row, which holds the zoo graph).
    A layer retuned with the same settings is skipped, with others refused."""
    url, ids = protocol_store
    with Store(url, readonly=True) as store:
        plan = plan_retune(store, "main", top=3, seeds=2, lr_trials=4)
        zoo = {r["name"]: r for r in store.baseline_layers("main")}
    assert [(layer.label, layer.kind) for layer in plan.layers] == [
        (f"#{ids['twin']}", "candidate"),
        ("bn_relu", "baseline"),
        ("gn_relu", "baseline"),
        ("evonorm_s0", "baseline"),
    ]
    by_label = {layer.label: layer for layer in plan.layers}
    assert by_label["evonorm_s0"].candidate == ids["evonorm_s0"] != ids["twin"]
    assert by_label["gn_relu"].candidate == zoo["gn_relu"]["id"]
    assert by_label["bn_relu"].graph == baselines.get("bn_relu").to_json()
    lr = plan.space.training.learning_rate
    assert plan.settings == {
        "steps": 2 * plan.space.training.steps,
        "seeds": [1, 2],
        "lr_trials": 4,
        "lr_range": [lr / 10, lr * 10],
    }
    assert plan.baselines and not plan.skipped

    with Store(url) as store:  # bn_relu retuned with these settings, as the driver records it
        store.set_retune(
            ids["bn_relu"],
            {
                **plan.settings,
                "learning_rate": 0.1,
                "split": "val",
                "trials": [{"learning_rate": 0.1, "accuracy": 0.5}],
            },
        )
        for seed, accuracies in [(1, (0.5, 0.6, 0.7)), (2, (0.4, 0.6, None))]:
            for architecture, accuracy in zip(
                ("resnet", "mobilenet", "efficientnet"), accuracies, strict=True
            ):
                store.add_evaluation(
                    ids["bn_relu"],
                    architecture=architecture,
                    dataset="cifar10",
                    preset="tiny",
                    seed=seed,
                    steps=600,
                    stage="retune",
                    status="completed" if accuracy else "diverged",
                    seconds=1.0,
                    accuracy=accuracy,
                )
        again = plan_retune(store, "main", top=3, seeds=2, lr_trials=4)
        assert [layer.label for layer in again.skipped] == ["bn_relu"]
        assert "bn_relu" not in [layer.label for layer in again.layers]
        with pytest.raises(StoreError, match=r"bn_relu .* retuned already with other settings"):
            plan_retune(store, "main", top=3, seeds=3, lr_trials=4)
        [result] = store.retune_results("main")
    assert (result["layer"], result["kind"], result["id"]) == (
        "bn_relu",
        "baseline",
        ids["bn_relu"],
    )
    assert result["learning_rate"] == 0.1 and result["split"] == "val"
    assert result["scores"]["resnet"] == {"mean": 0.45, "std": pytest.approx(0.0707107)}
    assert result["scores"]["efficientnet"] == {"mean": 0.7, "std": None}  # one seed ran
    assert result["mean"] == pytest.approx(0.6) and result["std"] is None  # seed 2 diverged
    assert result["complete_seeds"] == 1 and result["seeds"] == [1, 2]


CIFAR_SPACE = """
description = "a tiny CIFAR-10 protocol"
[graph]
ops = ["add", "mul", "div", "max"]
statistics = ["mean", "std"]
axes = ["batch"]
[proxy]
dataset = "cifar10"
preset = "tiny"
architectures = ["resnet"]
groups = 4
validation = 10
[training]
batch_size = 8
quality_steps = 2
steps = 3
"""


@pytest.mark.parametrize("test_batch", [True, False])
def test_final_seeds_are_measured_on_transfer_validation(tmp_path, test_batch):
    """The lr trials score on the search's validation split; a final seed on the transfer-
    validation slice, which selected nothing, whether or not CIFAR-10's test_batch is there."""
    space_path = tmp_path / "c10.toml"
    space_path.write_text(CIFAR_SPACE)
    # Enough images for the two transfer slices of 2,500 (the dataset's own sizes).
    data_dir = write_cifar(tmp_path / "cifar", per_batch=1004, test=test_batch)
    request = {
        "graph": baselines.get("bn_relu").to_json(),
        "space": str(space_path),
        "dataset": "cifar10",
        "data_dir": str(data_dir),
        "preset": None,
        "phase": "final",
        "learning_rate": 0.02,
        "seed": 1,
        "steps": 3,
    }
    report = retune_trial(request)
    assert report["split"] == "transfer_val" and len(report["evaluations"]) == 1
    [e] = report["evaluations"]
    assert e["architecture"] == "resnet" and e["status"] == "completed" and e["steps"] == 3
    # The same run again, measured on each split: the report is transfer-validation's.
    from evonorm_search.proxy.data import load_dataset

    data = load_dataset("cifar10", root=data_dir, validation=10)
    space = effective_space(str(space_path), "cifar10", None)
    space = dataclasses.replace(
        space, training=dataclasses.replace(space.training, learning_rate=0.02)
    )
    again = TrainingRun(baselines.get("bn_relu"), "resnet", data, space, 1, 3)
    assert again.advance(3)
    assert e["accuracy"] == evaluate(again.model, data, "transfer_val")[0]
    lr_trial = retune_trial({**request, "phase": "lr", "seed": 0})
    assert "split" not in lr_trial and 0 <= lr_trial["accuracy"] <= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--top", "1"], "unknown search 'nope'"),
        (["main", "--top", "0"], "0 is not in the range x>=1"),
        (["empty", "--top", "1"], "search 'empty' has no trained candidate to retune"),
        (["main", "--top", "1", "--seeds", "0"], "0 is not in the range x>=1"),
    ],
)
def test_errors_are_one_line_and_write_nothing(protocol_store, args, message):
    url, _ = protocol_store
    with Store(url) as store:
        store.create_search(
            "empty",
            space="evonorm_b",
            strategy="evolution",
            seed=0,
            budget=1,
            architectures=["resnet"],
            proxy_key="k",
        )
    before = rows(url, "SELECT id, measured FROM candidates") + rows(
        url, "SELECT * FROM evaluations"
    )
    code, out, err = run("retune", *args, "--db", url)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    after = rows(url, "SELECT id, measured FROM candidates") + rows(
        url, "SELECT * FROM evaluations"
    )
    assert after == before


def test_an_unreachable_database_is_one_line_and_not_created(tmp_path):
    missing = tmp_path / "missing.db"
    code, _, err = run("retune", "s", "--top", "1", "--db", f"sqlite:///{missing}")
    assert code == 2 and err.count("\n") == 1 and "no database at" in err
    assert not missing.exists()


TRIAL = re.compile(r"^(\S+): lr trial \d+/2, lr (\S+): val accuracy (\S+)$", re.M)


@pytest.mark.slow
def test_retune_a_search_and_the_baselines_in_real_processes(tmp_path):
    """A search, its retune (no baselines yet: one line says how to evaluate them), the
    zoo evaluated, a second retune that trains only the baselines, one with other
    settings refused; in the store, 2 seeds x architectures per layer at the chosen lr."""
    space_path, url = tmp_path / "zoospace.toml", f"sqlite:///{tmp_path / 'search.db'}"
    space_path.write_text(ZOO_SPACE)
    common = ["--no-verify", "--db", url]
    out = command("run", "--name", "s", "--space", str(space_path), "--budget", "2", *common)
    assert out.returncode == 0, out.stderr[-3000:]
    retune = [
        "retune",
        "s",
        "--top",
        "1",
        "--seeds",
        "2",
        "--lr-trials",
        "2",
        "--steps",
        "8",
        "--db",
        url,
    ]

    first = command(*retune)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (
        "no baselines evaluated on the protocol of search s: `evonorm-search baselines "
        f"evaluate --space {space_path} --db {url}` trains them" in first.stderr
    )
    [(best, best_formula)] = rows(
        url,
        "SELECT id, formula FROM candidates WHERE "
        "status = 'trained' ORDER BY mean_score DESC, id LIMIT 1",
    )
    assert f"#{best}: done at lr" in first.stderr

    out = command("baselines", "evaluate", "--space", str(space_path), *common)
    assert out.returncode == 0, out.stderr[-3000:]
    second = command(*retune, "--format", "json")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"#{best}: retuned already with these settings, not trained again" in second.stderr
    assert "no baselines evaluated" not in second.stderr
    results = json.loads(second.stdout)
    with Store(url, readonly=True) as store:
        trained_zoo = [r["name"] for r in store.baseline_layers("s") if r["scores"]]
    assert trained_zoo and set(trained_zoo) <= set(ZOO)
    assert {r["layer"] for r in results} == {f"#{best}", *trained_zoo}
    assert [r["mean"] for r in results] == sorted((r["mean"] for r in results), reverse=True)

    tried = defaultdict(list)  # the lr trials, as the progress lines said
    for label, lr, accuracy in TRIAL.findall(first.stderr + second.stderr):
        tried[label].append((float(lr), float(accuracy)))
    for r in results:
        candidate = r["id"]
        assert r["split"] == "transfer_val" and r["steps"] == 8 and r["seeds"] == [1, 2]
        low, high = r["lr_range"]
        assert (low, high) == pytest.approx((0.005, 0.5))  # the tiny space's 0.05, /10 and x10
        trials = [(t["learning_rate"], t["accuracy"]) for t in r["trials"]]
        assert len(trials) == 2 and trials[0][0] == r["base_learning_rate"] == 0.05
        assert all(low <= lr <= high for lr, _ in trials)
        assert r["learning_rate"] in [lr for lr, _ in trials]
        assert r["learning_rate"] == max(trials, key=lambda t: t[1])[0]  # the first of equals
        assert [(float(f"{lr:.4g}"), round(a, 4)) for lr, a in trials] == tried[r["layer"]]
        runs = rows(
            url,
            "SELECT seed, architecture, steps, accuracy, dataset FROM evaluations "
            f"WHERE candidate_id = {candidate} AND stage = 'retune'",
        )
        assert sorted((seed, a) for seed, a, *_ in runs) == [(1, "resnet"), (2, "resnet")]
        assert all(steps == 8 and dataset == "digits" for *_, steps, _, dataset in runs)
        accuracies = [accuracy for _, _, _, accuracy, _ in runs]
        assert r["scores"]["resnet"]["mean"] == pytest.approx(statistics.fmean(accuracies))
        assert r["scores"]["resnet"]["std"] == pytest.approx(statistics.stdev(accuracies))
        assert (r["mean"], r["std"]) == (
            r["scores"]["resnet"]["mean"],
            r["scores"]["resnet"]["std"],
        )
        [(measured,)] = rows(url, f"SELECT measured FROM candidates WHERE id = {candidate}")
        assert json.loads(measured)["retune"]["learning_rate"] == r["learning_rate"]
    assert rows(url, "SELECT DISTINCT stage FROM evaluations ORDER BY stage") == [
        ("proxy",),
        ("retune",),
    ]

    table = command(*retune, env={**os.environ, "COLUMNS": "250"})
    assert table.returncode == 0 and "search s re-ranked" in table.stdout
    assert all(name in table.stdout for name in [f"#{best}", best_formula, *trained_zoo])
    count = rows(url, "SELECT count(*) FROM evaluations")
    refused = command(*retune, "--seeds", "3")  # the last --seeds counts
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "retuned already with other settings" in refused.stderr
    assert rows(url, "SELECT count(*) FROM evaluations") == count
