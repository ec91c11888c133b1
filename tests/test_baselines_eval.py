"""`baselines evaluate`: the zoo's layers of a space trained as a search trains candidates
(strategy `zoo`, through the real driver), and `pareto NAME --with-baselines`, which shows
them beside the front of a search on the same protocol (proxy key)."""

import dataclasses
import json

import pytest
from click.testing import CliRunner
from test_search import TINY_SPACE, new_driver, rows, space_and_url
from test_search import cli as command

from evonorm_search import baselines
from evonorm_search.cli import cli
from evonorm_search.hashing import FunctionalCache, proxy_key
from evonorm_search.rejection import Funnel
from evonorm_search.search.driver import SearchSettings, _Driver, settings_space
from evonorm_search.search.strategies import STRATEGIES, Told, make_strategy, zoo_layers
from evonorm_search.space import load_space
from evonorm_search.store import Store, StoreFEC

PNG = b"\x89PNG\r\n\x1a\n"
# test_search's tiny space (a layer trains in seconds on the digits), with ops and axes that
# admit four zoo layers (relu, bn_relu, gn_relu, evonorm_s0) and no others.
ZOO_SPACE = (
    TINY_SPACE.replace("max_nodes = 6", "max_nodes = 8")
    .replace('"sigmoid", "tanh"]', '"sigmoid"]')
    .replace('axes = ["batch", "instance", "group"]', 'axes = ["batch", "group"]')
)
ZOO = ["relu", "bn_relu", "gn_relu", "evonorm_s0"]
NAME = "baselines-zoospace-digits-tiny-s0"


@pytest.fixture
def zoo_space(tmp_path):
    return space_and_url(tmp_path, ZOO_SPACE, "zoospace.toml")


def run(*args):
    result = CliRunner().invoke(cli, list(args), prog_name="evonorm-search", env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_the_zoo_strategy_proposes_each_layer_of_the_space_once(zoo_space):
    space = load_space(zoo_space[0])
    assert [n for n, _ in zoo_layers(space)] == ZOO  # the zoo's order
    assert "zoo" not in STRATEGIES  # not a choice of `run --strategy`
    zoo = make_strategy("zoo", space, ["resnet"], seed=0)
    proposals = []
    while not zoo.exhausted:
        proposals.append(zoo.ask())
        zoo.tell(proposals[-1], len(proposals), None)
    assert [p.mutation for p in proposals] == [f"baseline {n}" for n in ZOO]
    assert [p.graph for p in proposals] == [baselines.get(n) for n in ZOO]
    with pytest.raises(RuntimeError, match="exhausted"):
        zoo.ask()
    # Restored from a history, it proposes only what is left, however often it is told.
    resumed = make_strategy("zoo", space, ["resnet"], seed=0)
    history = [Told(i, p.graph, None) for i, p in enumerate(proposals[:2])]
    resumed.restore(history)
    resumed.restore(history[:1])  # a re-queued candidate, restored again once trained
    assert [resumed.ask().mutation for _ in range(2)] == ["baseline gn_relu", "baseline evonorm_s0"]
    assert resumed.exhausted


def test_the_driver_ends_a_search_whose_strategy_is_exhausted(zoo_space):
    """However high the cap on screening (`resume --max-candidates`), the driver asks the
    zoo no more once every layer was proposed, and a resume re-queues what was in flight."""
    store, settings, space, driver = new_driver(
        *zoo_space, NAME, strategy="zoo", budget=10, max_candidates=100
    )
    with store:
        configs = [driver.suggest(f"t{i}") for i in range(len(ZOO))]
        assert all(c is not None for c in configs)
        assert driver.suggest("t-last") is None and driver.finished()
        assert driver.stopped_reason == "the strategy has nothing more to propose"
        # Stopped with every layer in flight: a resume trains them before it ends.
        resumed = _Driver(store, settings, space, None)
        resumed.restore()
        assert len(resumed.requeued) == len(ZOO) and resumed.strategy.exhausted
        assert not resumed.finished()
        requeued = [resumed.suggest(f"r{i}")["request"]["candidate"] for i in range(len(ZOO))]
        assert requeued == [c["request"]["candidate"] for c in configs]
        assert resumed.suggest("r-last") is None and resumed.finished()


@pytest.fixture
def protocol_store(tmp_path):
    """A search `main` and baseline searches on its protocol, written through the store
    as the driver writes them: bn_relu trained, relu rejected at the quality check,
    evonorm_s0 an FEC hit of a candidate of `main`; an older baseline search with another
    seed (recorded without functional hashes, so that it is no FEC entry), which alone has
    gn_relu; a search `other` on another protocol."""
    url = f"sqlite:///{tmp_path / 'evonorm.db'}"
    space = load_space("evonorm_b")
    architectures = space.proxy.architectures
    key = proxy_key(space)

    def scores(*values: float) -> dict[str, float]:
        return dict(zip(architectures, values, strict=True))

    with Store(url) as store:
        funnel = Funnel(space, cache=FunctionalCache(backend=StoreFEC(store)))

        def search(name: str, strategy: str, seed: int, protocol: str = key) -> None:
            store.create_search(
                name,
                space="evonorm_b",
                strategy=strategy,
                seed=seed,
                budget=5,
                architectures=architectures,
                proxy_key=protocol,
                config={"space": "evonorm_b", "dataset": "digits", "seed": seed},
            )

        def screen(search_name: str, layer: str, mutation: str) -> int:
            return store.record_screening(
                search_name, funnel.screen(baselines.get(layer)), mutation=mutation
            )

        search("baselines-old-s1", "zoo", seed=1)
        for layer in ("relu", "gn_relu"):
            graph = baselines.get(layer)
            old = store.add_candidate(
                "baselines-old-s1",
                graph=graph.to_json(),
                formula=graph.formula(),
                status="queued",
                mutation=f"baseline {layer}",
            )
            store.set_fitness(old, scores(0.9, 0.9, 0.9))
        search("main", "evolution", seed=0)
        twin = screen("main", "evonorm_s0", "initial: baseline evonorm_s0")
        store.set_fitness(twin, scores(0.36, 0.34, 0.38))
        funnel = Funnel(space, cache=FunctionalCache(backend=StoreFEC(store)))  # a new search
        search("baselines-s0", "zoo", seed=0)
        relu = screen("baselines-s0", "relu", "baseline relu")
        store.update_candidate(
            relu, status="rejected", stage="quality", reason="below the quality threshold on resnet"
        )
        bn_relu = screen("baselines-s0", "bn_relu", "baseline bn_relu")
        store.set_fitness(bn_relu, scores(0.4, 0.5, 0.6))
        hit = screen("baselines-s0", "evonorm_s0", "baseline evonorm_s0")
        search("other", "evolution", seed=0, protocol="another-proxy-key")
    return url, {"relu": relu, "bn_relu": bn_relu, "evonorm_s0": hit, "twin": twin}


def test_baseline_layers_of_a_protocol_with_fates_and_fec_twins(protocol_store):
    url, ids = protocol_store
    with Store(url, readonly=True) as store:
        layers = {r["name"]: r for r in store.baseline_layers("main")}
        twin = store.candidate(ids["twin"])
        assert store.baseline_layers("other") == []
    assert list(layers) == ["relu", "bn_relu", "gn_relu", "evonorm_s0"]  # the zoo's order
    # The search's seed wins over an older baseline search; gn_relu is only in that one.
    assert {n: r["search"] for n, r in layers.items()} == {
        "relu": "baselines-s0",
        "bn_relu": "baselines-s0",
        "gn_relu": "baselines-old-s1",
        "evonorm_s0": "baselines-s0",
    }
    assert layers["gn_relu"]["seed"] == 1
    relu, bn_relu, s0 = layers["relu"], layers["bn_relu"], layers["evonorm_s0"]
    assert (relu["status"], relu["stage"], relu["scores"]) == ("rejected", "quality", None)
    assert bn_relu["id"] == ids["bn_relu"] and bn_relu["objectives"]["resnet"] == 0.4
    assert s0["status"] == "duplicate" and s0["duplicate_of"] == ids["twin"]
    assert s0["twin"] == ids["twin"] and s0["scores"] == twin["scores"]
    assert s0["mean_score"] == twin["mean_score"]


def test_pareto_with_baselines_as_json_table_csv(protocol_store):
    url, ids = protocol_store
    code, plain, _ = run("pareto", "main", "--db", url, "--format", "json")
    assert code == 0 and isinstance(json.loads(plain), list)  # unchanged without the flag
    code, out, err = run("pareto", "main", "--db", url, "--format", "json", "--with-baselines")
    assert code == 0 and err == ""
    shown = json.loads(out)
    assert shown["front"] == json.loads(plain)
    assert [b["name"] for b in shown["baselines"]] == ["relu", "bn_relu", "gn_relu", "evonorm_s0"]
    code, out, _ = run("pareto", "main", "--db", url, "--with-baselines")
    assert code == 0 and "4 baselines on its protocol" in out
    assert "bn_relu" in out and "rejected at quality" in out and f"FEC hit of {ids['twin']}" in out
    code, out, _ = run("pareto", "main", "--db", url, "--with-baselines", "--format", "csv")
    table = out.splitlines()
    assert table[0].endswith(",baseline") and table[-1].endswith(",evonorm_s0")


def test_pareto_with_no_baselines_on_the_protocol_says_how_to_evaluate_them(protocol_store):
    url, _ = protocol_store
    code, out, err = run("pareto", "other", "--db", url, "--with-baselines")
    assert code == 0 and "Pareto front of other: 0 candidates" in out
    assert err.count("\n") == 1
    assert "no baselines evaluated on the protocol of search other" in err
    assert f"evonorm-search baselines evaluate --space evonorm_b --db {url}" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "nope"], "unknown search space 'nope'"),
        (["--preset", "huge"], "'huge' is not one of 'tiny', 'paper'"),
        (["--data", "cifar10", "--data-dir", "{tmp}"], "CIFAR-10 data not found"),
        (["--db", "sqlite:///{tmp}/missing/x.db"], "cannot create sqlite:///"),
        (["--space", "{tmp}/nozoo.toml"], "no layer of the baseline zoo belongs to space 'nozoo'"),
    ],
)
def test_evaluate_errors_are_one_line(tmp_path, args, message):
    (tmp_path / "nozoo.toml").write_text(
        'description = "no zoo layer"\n[graph]\nops = ["add", "mul"]\nstatistics = ["mean"]\n'
    )
    code, _, err = run("baselines", "evaluate", *[a.format(tmp=tmp_path) for a in args])
    assert code == 2, err
    assert err.count("\n") == 1 and message in err, err


def test_evaluate_again_says_so_in_one_line(zoo_space):
    space_path, url = zoo_space
    space = settings_space(SearchSettings(name=NAME, space=str(space_path)))
    with Store(url) as store:
        store.create_search(
            NAME,
            space=str(space_path),
            strategy="zoo",
            seed=0,
            budget=4,
            architectures=space.proxy.architectures,
            proxy_key=proxy_key(space),
        )
        store.set_search_status(NAME, "stopped")
    evaluate = ("baselines", "evaluate", "--space", str(space_path), "--no-verify", "--db", url)
    code, _, err = run(*evaluate)
    assert code == 2 and err.count("\n") == 1
    assert f"search '{NAME}' (stopped): `evonorm-search resume {NAME}` continues it" in err
    with Store(url) as store:
        store.set_search_status(NAME, "exhausted")
    code, out, _ = run(*evaluate)
    assert code == 0 and out.count("\n") == 1 and "evaluated already" in out
    other = url.replace("search.db", "other.db")
    with Store(other) as store:  # a search of that name that holds no baselines
        store.create_search(
            NAME,
            space=str(space_path),
            strategy="evolution",
            seed=0,
            budget=4,
            architectures=space.proxy.architectures,
            proxy_key=proxy_key(space),
        )
    code, _, err = run(*evaluate[:-1], other)
    assert code == 2 and err.count("\n") == 1
    assert f"search '{NAME}' exists but holds no baselines of this protocol" in err


@pytest.mark.slow
def test_evaluate_then_compare_with_a_search_on_the_same_protocol(zoo_space, tmp_path):
    """The real commands in real processes: the zoo trained as candidates are, a search on
    the same protocol, its front with the baselines (JSON, table, plot), and a search on
    another protocol, which gets one line on how to evaluate its baselines."""
    space_path, url = zoo_space
    evaluate = ["baselines", "evaluate", "--space", str(space_path), "--no-verify", "--db", url]
    out = command(*evaluate)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"search {NAME}: completed, 4/4 trained" in out.stdout
    stored = rows(
        url,
        "SELECT c.mutation, c.status, c.stage FROM candidates c JOIN searches "
        f"s ON s.id = c.search_id WHERE s.name = '{NAME}' "
        "ORDER BY c.birth",
    )
    assert [m for m, _, _ in stored] == [f"baseline {n}" for n in ZOO]
    assert all(
        status in ("trained", "rejected", "duplicate", "failed") and stage
        for _, status, stage in stored
    )
    again = command(*evaluate)
    assert again.returncode == 0 and again.stdout.count("\n") == 1
    assert "evaluated already" in again.stdout and again.stderr == ""

    search = command(
        "run",
        "--name",
        "s",
        "--space",
        str(space_path),
        "--budget",
        "2",
        "--no-verify",
        "--db",
        url,
    )
    assert search.returncode == 0, search.stderr[-3000:]
    out = command("pareto", "s", "--with-baselines", "--format", "json", "--db", url)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    shown = json.loads(out.stdout)
    assert shown["front"] and [b["name"] for b in shown["baselines"]] == ZOO
    trained = dict(rows(url, "SELECT id, scores FROM candidates WHERE status = 'trained'"))
    for b in shown["baselines"]:
        if b["status"] == "trained":
            assert b["scores"] == json.loads(trained[b["id"]])
    plot = tmp_path / "front.png"
    out = command("pareto", "s", "--with-baselines", "--plot", str(plot), "--db", url)
    assert out.returncode == 0 and plot.read_bytes().startswith(PNG)
    assert all(name in out.stdout for name in ZOO)

    # Another protocol (more training steps: another proxy key) in the same database.
    other_path = tmp_path / "longer.toml"
    other_path.write_text(ZOO_SPACE.replace("steps = 8", "steps = 16"))
    settings = SearchSettings(name="longer", space=str(other_path), budget=1)
    other = settings_space(settings)
    assert proxy_key(other) != proxy_key(
        settings_space(dataclasses.replace(settings, space=str(space_path)))
    )
    with Store(url) as store:
        store.create_search(
            "longer",
            space=settings.space,
            strategy="evolution",
            seed=0,
            budget=1,
            architectures=other.proxy.architectures,
            proxy_key=proxy_key(other),
            config=settings.to_config(),
        )
    out = command("pareto", "longer", "--with-baselines", "--db", url)
    assert out.returncode == 0 and "Pareto front of longer" in out.stdout
    assert out.stderr.count("\n") == 1
    assert f"evonorm-search baselines evaluate --space {other_path} --db {url}" in out.stderr


@pytest.mark.slow
def test_evaluate_records_refused_layers_and_ends_exhausted(tmp_path):
    """Layers the quality check refuses are stored with their fate, and the search ends
    when the zoo has nothing more to propose."""
    path = tmp_path / "strict.toml"
    path.write_text(ZOO_SPACE.replace("quality_accuracy = 0.0", "quality_accuracy = 0.999"))
    url = f"sqlite:///{tmp_path / 'strict.db'}"
    out = command("baselines", "evaluate", "--space", str(path), "--no-verify", "--db", url)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (
        "baselines-strict-digits-tiny-s0: exhausted (the strategy has nothing more to "
        "propose), 0/4 trained, 4 screened"
    ) in out.stdout
    stored = rows(url, "SELECT mutation, status, stage FROM candidates ORDER BY birth")
    assert stored == [(f"baseline {n}", "rejected", "quality") for n in ZOO]
