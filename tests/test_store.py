"""The results store on SQLite and PostgreSQL: schema and migrations, writes, queries."""

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from evonorm_search import baselines
from evonorm_search.hashing import FunctionalCache, proxy_key
from evonorm_search.proxy.data import load_dataset
from evonorm_search.proxy.models import TRANSFER_NETWORKS
from evonorm_search.proxy.train import train_candidate
from evonorm_search.rejection import Funnel
from evonorm_search.resources import resource_dir
from evonorm_search.space import load_space
from evonorm_search.store import Store, StoreError, StoreFEC, make_engine
from evonorm_search.store.models import Base

from store_data import brute_force_front, populate

SPACE = load_space("evonorm_b")


def new_search(store, name="s", objectives=None):
    store.create_search(
        name,
        space="evonorm_b",
        strategy="evolution",
        seed=0,
        budget=10,
        architectures=SPACE.proxy.architectures,
        proxy_key=proxy_key(SPACE),
        objectives=objectives,
    )


def revision(url):
    engine = make_engine(url)
    with engine.connect() as connection:
        value = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    return value


# -- schema --------------------------------------------------------------------------------


def test_a_new_database_is_created_at_head_and_matches_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    Store(db_url).close()
    assert revision(db_url) == "0005"
    engine = make_engine(db_url)
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        # The migration creates exactly what the ORM models declare (types, indexes, keys).
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert tables == {
        "alembic_version",
        "searches",
        "candidates",
        "evaluations",
        "fec",
        "checkpoints",
    }
    assert diff == []


def test_a_reader_never_creates_a_database(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(StoreError, match="no database at"):
        Store(f"sqlite:///{path}", readonly=True)
    assert not path.exists()


def test_a_reader_on_an_empty_postgres_database_refuses_to_create():
    from conftest import postgres_database

    databases = postgres_database()
    url = next(databases)
    try:
        with pytest.raises(StoreError, match="no evonorm-search database"):
            Store(url, readonly=True)
        engine = make_engine(url)
        with engine.connect() as connection:
            assert sa.inspect(connection).get_table_names() == []
        engine.dispose()
    finally:
        databases.close()


def test_a_newer_revision_is_refused_and_left_untouched(db_url):
    with Store(db_url) as store:
        new_search(store)
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    engine.dispose()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer than this evonorm-search"):
            Store(db_url, readonly=readonly)
    with pytest.raises(StoreError, match="newer"):
        from evonorm_search.store import upgrade

        engine = make_engine(db_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
    assert revision(db_url) == "ffff9999"


def test_an_older_revision_asks_for_upgrade_and_upgrade_keeps_the_data(tmp_path, monkeypatch):
    """A migration environment with a sixth revision: a database at 0005 is older."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Store(url) as store:
        new_search(store, "kept")
    scripts = tmp_path / "db"
    shutil.copytree(resource_dir("db"), scripts)
    (scripts / "versions" / "0006_note.py").write_text(
        'import sqlalchemy as sa\nfrom alembic import op\n\nrevision = "0006"\n'
        'down_revision = "0005"\n\n\ndef upgrade():\n'
        '    with op.batch_alter_table("searches") as batch:\n'
        '        batch.add_column(sa.Column("note", sa.Text(), nullable=True))\n'
    )
    monkeypatch.setattr("evonorm_search.store.engine.resource_dir", lambda _: scripts)
    with pytest.raises(StoreError, match=r"older than this code's 0006: run `evonorm-search db"):
        Store(url, readonly=True)
    from click.testing import CliRunner

    from evonorm_search.cli import cli

    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0, result.output
    assert "0005 -> 0006" in result.output
    assert revision(url) == "0006"
    with Store(url, readonly=True) as store:
        assert store.search("kept")["space"] == "evonorm_b"
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", url])
    assert "is at the current schema (0006)" in result.output


def test_a_database_of_the_first_schema_upgrades_to_record_nodes(tmp_path):
    """The real migrations from 0001: evaluations gain the Ray node they ran on."""
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'first.db'}"
    config = Config()
    config.set_main_option("script_location", str(resource_dir("db")))
    config.set_main_option("sqlalchemy.url", url)
    engine = make_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    engine.dispose()
    assert revision(url) == "0001"
    with pytest.raises(StoreError, match="older than this code's 0005"):
        Store(url, readonly=True)
    from click.testing import CliRunner

    from evonorm_search.cli import cli

    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0 and "0001 -> 0005" in result.output, result.output
    with Store(url) as store:
        new_search(store, "upgraded")
        candidate = store.add_candidate("upgraded", graph="{}", status="queued")
        store.add_evaluation(
            candidate,
            architecture="resnet",
            dataset="digits",
            preset="tiny",
            seed=0,
            steps=3,
            status="completed",
            seconds=0.1,
            node="n1",
        )
        assert store.candidate(candidate)["evaluations"][0]["node"] == "n1"


def _rows(url):
    """Every row of every table, in key order."""
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = {
            table: connection.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1")).all()
            for table in ("searches", "candidates", "evaluations", "fec")
        }
        types = {
            (table, column["name"]): str(column["type"])
            for table in ("searches", "candidates")
            for column in sa.inspect(connection).get_columns(table)
        }
    engine.dispose()
    return rows, types


def test_upgrading_to_unbounded_text_keeps_every_row(db_url):
    """0002 -> 0003 widens searches.space and candidates.reason to TEXT.  On SQLite the
    batch rebuilds both tables: with foreign keys on, dropping the old searches table
    would cascade to every candidate, evaluation and FEC entry."""
    from alembic import command

    from evonorm_search.store.engine import _alembic_config, _migration

    with Store(db_url) as store:
        history = populate(store, candidates=40)
        trained = next(iter(history.scores))
        store.add_evaluation(
            trained,
            architecture="resnet",
            dataset="digits",
            preset="tiny",
            seed=0,
            steps=3,
            status="completed",
            seconds=0.1,
            node="n1",
        )
    before, _ = _rows(db_url)
    assert len(before["candidates"]) == 40 and before["fec"] and before["evaluations"]
    # The evaluations' last two columns (0005: code_version, figures) do not survive a
    # downgrade below 0005: compared without them.
    before["evaluations"] = [tuple(row)[:-2] for row in before["evaluations"]]
    engine = make_engine(db_url)
    with engine.connect() as connection, _migration(connection):
        command.downgrade(_alembic_config(connection), "0002")
    engine.dispose()
    assert revision(db_url) == "0002"
    assert _rows(db_url)[1][("candidates", "reason")] == "VARCHAR(200)"

    from click.testing import CliRunner

    from evonorm_search.cli import cli

    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", db_url])
    assert result.exit_code == 0 and "0002 -> 0005" in result.output, result.output
    after, widened = _rows(db_url)
    assert [row[-2:] for row in after["evaluations"]] == [(None, None)]
    after["evaluations"] = [tuple(row)[:-2] for row in after["evaluations"]]
    assert after == before
    assert widened[("searches", "space")] == widened[("candidates", "reason")] == "TEXT"
    with Store(db_url) as store:  # foreign keys hold again: a candidate needs its search
        with pytest.raises(StoreError, match="unknown candidate id"):
            store.add_evaluation(
                10**9,
                architecture="resnet",
                dataset="digits",
                preset="tiny",
                seed=0,
                steps=1,
                status="completed",
                seconds=0.1,
            )
        long_space = "/" + "/".join(["d" * 120] * 4) + "/space.toml"
        store.create_search(
            "long",
            space=long_space,
            strategy="random",
            seed=0,
            budget=1,
            architectures=["resnet"],
            proxy_key="k",
        )
        assert store.search("long")["space"] == long_space


def test_every_bounded_column_is_bounded_by_its_writers(db_url):
    """Each VARCHAR(n) column holds values its writers bound; the store refuses longer
    ones in one line (PostgreSQL would refuse the write, SQLite store it silently), and
    free text (reasons, details, formulas, space paths) is TEXT, kept whole."""
    from evonorm_search.proxy.models import PRESETS
    from evonorm_search.rejection import STAGES
    from evonorm_search.search.strategies import STRATEGIES
    from evonorm_search.store.models import CANDIDATE_STATUSES, SEARCH_STATUSES

    bounded = {
        f"{t.name}.{c.name}": c.type.length
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if getattr(c.type, "length", None)
    }
    # What writes each one, and the longest value it can write.
    writers = {
        "searches.name": 200,  # check_search_name
        "searches.strategy": max(map(len, [*STRATEGIES, "zoo"])),
        "searches.status": max(map(len, SEARCH_STATUSES)),
        "searches.proxy_key": len(proxy_key(SPACE)),
        "searches.code_version": 40,
        "evaluations.code_version": 40,  # provenance, cut to 40
        "candidates.structural_hash": 64,
        "candidates.functional_hash": 64,  # sha256 hex
        "candidates.status": max(map(len, CANDIDATE_STATUSES)),
        "candidates.stage": max(map(len, [*STAGES, "compile", "quality", "trial", "proxy"])),
        "evaluations.stage": max(map(len, ["proxy", "retune", "reevaluate", "transfer"])),
        "evaluations.architecture": max(map(len, [*SPACE.proxy.architectures, *TRANSFER_NETWORKS])),
        "evaluations.dataset": max(map(len, ["digits", "cifar10", "synthetic"])),
        "evaluations.preset": max(map(len, PRESETS["resnet"])),
        "evaluations.status": max(map(len, ["completed", "rejected", "diverged", "failed"])),
        "evaluations.node": 64,  # a Ray node id (56 hex digits); a host name is cut to fit
        "fec.functional_hash": 64,
        "fec.proxy_key": 64,
        "checkpoints.key": 64,  # sha256 hex
    }
    assert set(bounded) == set(writers), "a bounded column without a known writer"
    assert all(writers[c] <= bounded[c] for c in bounded), {
        c: (writers[c], bounded[c]) for c in bounded
    }
    with Store(db_url) as store:
        new_search(store)
        cid = store.add_candidate("s", graph="{}", status="queued")
        reason = "RuntimeError: " + "why " * 500  # free text is kept whole
        store.update_candidate(
            cid, status="failed", stage="trial", reason=reason, detail=reason * 3
        )
        assert store.candidate(cid)["reason"] == reason
        with pytest.raises(StoreError, match=r"candidates.stage holds at most 16 characters"):
            store.update_candidate(cid, status="failed", stage="a-stage-name-too-long")
        with pytest.raises(StoreError, match=r"evaluations.architecture holds at most 40"):
            store.add_evaluation(
                cid,
                architecture="r" * 41,
                dataset="digits",
                preset="tiny",
                seed=0,
                steps=1,
                status="completed",
                seconds=0.1,
            )
        store.add_evaluation(
            cid,
            architecture="resnet",
            dataset="digits",
            preset="tiny",
            seed=0,
            steps=1,
            status="completed",
            seconds=0.1,
            node="host-" + "h" * 100,
        )
        assert store.candidate(cid)["evaluations"][0]["node"] == ("host-" + "h" * 100)[:64]


def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not an evonorm-search database"):
        Store(f"sqlite:///{path}")


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "malformed database URL"),
        ("mysql://u@h/d", "unsupported database 'mysql'"),
        ("sqlite:////no/such/dir/x.db", "no directory /no/such/dir"),
        ("postgresql://u:s3cret@127.0.0.1:1/db", "cannot use postgresql://u:\\*\\*\\*@"),
    ],
)
def test_bad_urls_name_the_problem_and_hide_passwords(url, message):
    with pytest.raises(StoreError, match=message) as error:
        Store(url)
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://alice:S3cret@127.0.0.1:1/evo", "postgresql://alice:***@127.0.0.1:1/evo"),
        (
            "postgresql://alice@127.0.0.1:1/evo?password=S3cret",
            "postgresql://alice@127.0.0.1:1/evo?password=***",
        ),
        ("postgresql:///evo?password=S3cret", "postgresql:///evo?password=***"),
        ("postgresql://alice:S3c@ret@127.0.0.1:1/evo", "postgresql://alice:***@127.0.0.1:1/evo"),
        ("postgresql://alice:S3c/r?et@127.0.0.1:1/evo", "postgresql://alice:***@127.0.0.1:1/evo"),
        (
            "postgresql://alice@h:1/evo?sslpassword=S3cret&sslmode=require&passfile=/S3cret",
            "postgresql://alice@h:1/evo?passfile=***&sslmode=require&sslpassword=***",
        ),
        ("postgresql+psycopg://alice:S3c%40ret@h/evo", "postgresql://alice:***@h/evo"),
        ("not a url alice:S3cret@host", "not a url alice:***@host"),
        ("sqlite:////tmp/evonorm.db", "sqlite:////tmp/evonorm.db"),
    ],
)
def test_mask_hides_every_credential(url, shown):
    from evonorm_search.store import mask

    assert mask(url) == shown
    assert "S3c" not in mask(sa.engine.make_url(url)) if "://" in url else True


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice@127.0.0.1:1/evo?password=S3cret",
        "postgresql://alice:S3c@ret@127.0.0.1:1/evo",
        "postgresql:///evo?host=127.0.0.1&port=1&password=S3cret",
    ],
)
def test_an_unreachable_database_never_shows_its_password(url):
    with pytest.raises(StoreError, match="cannot use postgresql://") as error:
        Store(url)
    assert "S3c" not in str(error.value)


def test_readonly_stores_cannot_write_even_through_sql(db_url):
    with Store(db_url) as store:
        new_search(store)
    with Store(db_url, readonly=True) as reader:
        with pytest.raises(StoreError, match="read-only"):
            reader.set_search_status("s", "stopped")
        with pytest.raises(sa.exc.DBAPIError), reader.engine.begin() as connection:
            connection.execute(sa.text("UPDATE searches SET status = 'failed'"))
        assert reader.search("s")["status"] == "running"


# -- writes -------------------------------------------------------------------------------


def test_search_names_are_unique_and_checked(sqlite_url):
    with Store(sqlite_url) as store:
        new_search(store, "a b")
        with pytest.raises(StoreError, match="exists already"):
            new_search(store, "a b")
        for bad in ("", "a/b", "tab\there", "x" * 201, ".", ".."):
            with pytest.raises(StoreError, match="bad search name"):
                new_search(store, bad)
        with pytest.raises(StoreError, match="bad objectives bogus"):
            new_search(store, "c", objectives=["bogus"])
        with pytest.raises(StoreError, match="unknown search 'zzz' \\(searches: a b\\)"):
            store.status("zzz")


def test_a_failed_batch_writes_nothing(db_url):
    with Store(db_url) as store:
        new_search(store)
        with pytest.raises(RuntimeError), store.batch():
            store.add_candidate("s", graph="x", status="rejected", stage="static")
            store.add_candidate("s", graph="y", status="rejected", stage="static")
            raise RuntimeError("driver crashed mid-batch")
        assert store.status("s")["screened"] == 0
        with store.batch():
            first = store.add_candidate("s", graph="x", status="queued")
            second = store.add_candidate("s", graph="y", status="queued", parent=first)
        assert store.lineage(second)[1]["id"] == first
        assert [store.candidate(i)["birth"] for i in (first, second)] == [0, 1]


def test_non_finite_figures_are_stored_as_null(db_url):
    with Store(db_url) as store:
        new_search(store)
        cid = store.add_candidate(
            "s",
            graph="x",
            status="rejected",
            stage="stability",
            measured={"ratio": float("inf"), "peak": np.float32(2.5)},
        )
        store.add_evaluation(
            cid,
            architecture="resnet",
            dataset="digits",
            preset="tiny",
            seed=0,
            steps=3,
            status="diverged",
            seconds=0.1,
            loss=float("nan"),
        )
        record = store.candidate(cid)
    assert record["measured"] == {"ratio": None, "peak": 2.5}
    assert record["evaluations"][0]["loss"] is None


# -- queries on a populated store --------------------------------------------------------


@pytest.fixture
def populated(db_url):
    with Store(db_url) as store:
        history = populate(store, candidates=150)
    with Store(db_url, readonly=True) as reader:
        yield reader, history


def test_status_and_funnel_count_every_fate(populated):
    store, history = populated
    status = store.status(history.name)
    fates = list(history.fate.values())
    assert status["screened"] == len(history.ids) == 150
    assert status["trained"] == sum(f[0] == "trained" for f in fates) > 20
    assert status["duplicates"] == sum(f[0] == "duplicate" for f in fates) > 0
    rejected = {}
    for st, stage, _ in fates:
        if st == "rejected":
            rejected[stage] = rejected.get(stage, 0) + 1
    assert status["rejected"] == rejected
    funnel = store.funnel(history.name)
    assert sum(row["count"] for row in funnel) == 150
    for row in funnel:
        assert row["count"] == sum(f == (row["status"], row["stage"], row["reason"]) for f in fates)
    best = max(history.scores, key=lambda i: (np.mean(list(history.scores[i].values())), -i))
    assert status["best"]["id"] == best


def test_the_front_equals_a_brute_force_one(populated):
    store, history = populated
    archs = history.architectures
    points = {i: [s[a] for a in archs] for i, s in history.scores.items()}
    front = store.pareto(history.name)
    assert {r["id"] for r in front} == brute_force_front(points)
    assert store.pareto(history.name, recompute=True) == front
    assert store.status(history.name)["front_size"] == len(front)
    assert [r["mean_score"] for r in front] == sorted(
        (r["mean_score"] for r in front), reverse=True
    )
    # Other objectives are computed, with costs minimised.
    mean_nodes = {i: [float(np.mean(p)), -history.nodes[i]] for i, p in points.items()}
    computed = store.pareto(history.name, ["mean", "nodes"])
    assert {r["id"] for r in computed} == brute_force_front(mean_nodes)
    assert set(computed[0]["objectives"]) == {"mean", "nodes"}
    with pytest.raises(StoreError, match="bad objectives"):
        store.pareto(history.name, ["resnet", "resnet"])


def test_lineage_follows_parents_back_to_the_initial_population(populated):
    store, history = populated
    deepest = max(history.ids, key=lambda i: len(_ancestry(history, i)))
    chain = store.lineage(deepest)
    assert [a["id"] for a in chain] == _ancestry(history, deepest)
    assert len(chain) >= 3
    assert [a["mutation"] for a in chain] == [
        history.mutation[i] for i in _ancestry(history, deepest)
    ]
    assert chain[-1]["mutation"] is None  # an initial graph
    with pytest.raises(StoreError, match="unknown candidate id 999999"):
        store.lineage(999999)


def _ancestry(history, cid):
    chain = [cid]
    while history.parent[chain[-1]] is not None:
        chain.append(history.parent[chain[-1]])
    return chain


def test_top_k_ranks_trained_candidates(populated):
    store, history = populated
    by_mean = sorted(history.scores, key=lambda i: (-np.mean(list(history.scores[i].values())), i))
    assert [r["id"] for r in store.top(history.name, 5)] == by_mean[:5]
    by_resnet = sorted(history.scores, key=lambda i: (-history.scores[i]["resnet"], i))
    assert [r["id"] for r in store.top(history.name, 3, by="resnet")] == by_resnet[:3]
    with pytest.raises(StoreError, match="top-k ranks by accuracy"):
        store.top(history.name, 3, by="cost")


def test_the_fec_is_shared_across_searches(db_url):
    """A second search of the same protocol finds the first one's fitness in the database:
    the functional twin of a trained layer is a duplicate linked to it, never trained."""
    with Store(db_url) as store:
        new_search(store, "first")
        first = Funnel(SPACE, cache=FunctionalCache(backend=StoreFEC(store)), stability=False)
        screening = first.screen("x * sigmoid(v1 * x) / std_group(x)")
        trained = store.record_screening("first", screening)
        store.set_fitness(trained, {"resnet": 0.3, "mobilenet": 0.25, "efficientnet": 0.28})
        assert store.fec_get(screening.functional_hash, proxy_key(SPACE)).candidate == str(trained)

    with Store(db_url) as store:  # a later process: the in-memory cache is gone
        new_search(store, "second")
        second = Funnel(SPACE, cache=FunctionalCache(backend=StoreFEC(store)), stability=False)
        twin = second.screen("x * sigmoid(x * v1) / std_group(x + 0)")
        assert twin.fate.stage == "functional" and twin.fitness.scores["resnet"] == 0.3
        cid = store.record_screening("second", twin)
        record = store.candidate(cid)
    assert (record["status"], record["duplicate_of"]) == ("duplicate", trained)
    assert record["scores"] is None and not record["on_front"]  # not a point of its own


def test_a_really_trained_candidate_is_stored_with_its_evaluations(sqlite_url):
    space = dataclasses.replace(
        SPACE,
        training=dataclasses.replace(SPACE.training, steps=4, quality_steps=2, batch_size=16),
        rejection=dataclasses.replace(SPACE.rejection, quality_accuracy=0.0),
    )
    data = load_dataset("synthetic")
    graph = baselines.get("bn_relu")
    results = train_candidate(graph, data, space=space, seed=0)
    with Store(sqlite_url) as store:
        new_search(store)
        cid = store.record_screening("s", Funnel(space, stability=False).screen(graph))
        for architecture, r in results.items():
            store.add_evaluation(
                cid,
                architecture=architecture,
                dataset=data.name,
                preset=space.proxy.preset,
                seed=0,
                steps=r.steps,
                accuracy=r.accuracy,
                loss=r.loss,
                quality_accuracy=r.quality_accuracy,
                status=r.status,
                seconds=r.seconds,
            )
        store.set_fitness(cid, {a: r.accuracy for a, r in results.items()})
        record = store.candidate(cid)
    assert record["status"] == "trained" and record["on_front"]
    assert {e["architecture"]: e["accuracy"] for e in record["evaluations"]} == {
        a: r.accuracy for a, r in results.items()
    }
    assert [e["steps"] for e in record["evaluations"]] == [4, 4, 4]


def test_database_files_are_in_wal_mode(sqlite_url):
    Store(sqlite_url).close()
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- one writer, many readers ------------------------------------------------------------


@pytest.mark.slow
def test_readers_never_block_the_writer_nor_see_errors(db_url):
    """One process writes candidates with evaluations for 20 s while four processes
    query the front and the status: zero errors, zero lost rows."""
    import multiprocessing

    from store_data import concurrent_reader, concurrent_writer

    with Store(db_url) as store:
        new_search(store)
    context = multiprocessing.get_context("spawn")
    done, results = context.Event(), context.Queue()
    processes = [context.Process(target=concurrent_writer, args=(db_url, "s", 20.0, done, results))]
    processes += [
        context.Process(target=concurrent_reader, args=(db_url, "s", done, results))
        for _ in range(4)
    ]
    for p in processes:
        p.start()
    reports = [results.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * 5
    errors = [e for *_, errs in reports for e in errs]
    assert errors == []
    (writer,) = [r for r in reports if r[0] == "writer"]
    readers = [r for r in reports if r[0] == "reader"]
    assert writer[1] > 50 and all(r[1] > 5 for r in readers), reports
    with Store(db_url, readonly=True) as store:
        status = store.status("s")
        assert status["trained"] == writer[1]
        engine = store.engine
        with engine.connect() as connection:
            count = connection.execute(sa.text("SELECT count(*) FROM evaluations")).scalar()
        assert count == writer[2]
        points = {p["id"]: list(p["scores"].values()) for p in store.trained_points("s")}
        assert {r["id"] for r in store.pareto("s")} == brute_force_front(points)


def test_worker_time_is_kept_and_accounted_by_fate(db_url):
    """The driver's progress (worker time over every sitting, the strategy's random state)
    round-trips; status sums the trials' seconds by fate (a divergence is its own fate,
    screening time is not worker time) and gives the yield per worker-hour."""
    with Store(db_url) as store:
        store.create_search(
            "w",
            space="evonorm_b",
            strategy="evolution",
            seed=0,
            budget=10,
            architectures=["resnet"],
            proxy_key="k",
            config={"worker_hours": 2.0},
        )
        assert store.status("w")["trained_per_worker_hour"] is None  # no worker time yet
        trials = [
            (
                "trained",
                None,
                None,
                {"signal": 1.0, "quality": 9.0, "compile": 3.0, "training": 20.0, "static": 0.5},
            ),
            ("rejected", "signal", "loss not falling", {"signal": 1.5}),
            ("rejected", "quality", "below", {"signal": 1.0, "quality": 8.0}),
            ("failed", "quality", "diverged on resnet at step 3", {"signal": 0.5}),
            ("failed", "trial", "the trial failed", {}),
            ("rejected", "numeric", "constant_output", {"numeric": 0.2}),
            ("trained", None, None, {"compile": 2.0, "proxy": 30.0}),
        ]
        for status, stage, reason, seconds in trials:
            c = store.add_candidate("w", graph="{}", status="queued", seconds=seconds)
            if status == "trained":
                store.set_fitness(c, {"resnet": 0.5})
            else:
                store.update_candidate(c, status=status, stage=stage, reason=reason)
        store.set_search_progress("w", worker_seconds=3600.0, strategy_state={"numpy": "{}"})
        status = store.status("w")
        search = store.search("w")
    assert search["worker_seconds"] == 3600.0 and search["strategy_state"] == {"numpy": "{}"}
    assert status["worker_by_fate"] == {
        "trained": 65.0,
        "rejected at quality": 9.0,
        "rejected at signal": 1.5,
        "diverged": 0.5,
        "failed": 0.0,
    }
    assert status["worker_seconds"] == 3600.0 and status["worker_hours_budget"] == 2.0
    assert status["trained_per_worker_hour"] == 2.0
    assert status["stopped_at"]["signal"] == 1 and list(status["stopped_at"])[5] == "signal"


def test_checkpoints_are_kept_replaced_and_dropped(db_url):
    """The latest state of a long run, by key; gone with its candidate or when dropped."""
    with Store(db_url) as store:
        new_search(store)
        cid = store.add_candidate("s", graph="{}", status="trained")
        assert store.checkpoint("k" * 64) is None
        store.put_checkpoint("k" * 64, cid, 100, b"\x00first")
        store.put_checkpoint("k" * 64, cid, 200, b"\x00\xffsecond")
        store.put_checkpoint("j" * 64, cid, 50, bytes(range(256)) * 1000)
        assert store.checkpoint("k" * 64) == (200, b"\x00\xffsecond")
        assert store.checkpoint("j" * 64) == (50, bytes(range(256)) * 1000)
        store.drop_checkpoint("k" * 64)
        assert store.checkpoint("k" * 64) is None
        with pytest.raises(StoreError, match="unknown candidate id 999"):
            store.put_checkpoint("x" * 64, 999, 1, b"")


def test_evaluations_record_the_code_that_ran_them(db_url):
    from evonorm_search.provenance import code_version

    version = code_version()
    assert version.startswith("0.1.0") and len(version) <= 40
    with Store(db_url) as store:
        new_search(store)
        cid = store.add_candidate("s", graph="{}", status="trained")
        common = dict(
            architecture="resnet",
            dataset="digits",
            preset="tiny",
            steps=3,
            status="completed",
            seconds=1.0,
        )
        store.add_evaluation(cid, seed=0, **common)
        store.add_evaluation(
            cid,
            seed=1,
            code_version="0.0.9+gabc",
            stage="transfer",
            figures={"curve": [[100, 0.5]], "learning_rate": 0.1},
            **common,
        )
    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT seed, code_version, figures FROM evaluations ORDER BY seed")
        ).all()
    engine.dispose()
    assert rows[0][:2] == (0, version) and rows[0][2] is None
    figures = rows[1][2] if isinstance(rows[1][2], dict) else json.loads(rows[1][2])
    assert rows[1][:2] == (1, "0.0.9+gabc") and figures["learning_rate"] == 0.1
