"""The dashboard over a real (tiny) search: its JSON is the CLI's, its pages escape what the
database holds and answer 404s, it refuses a bad start in one line, and in Debian's
Chromium the front, a click, the funnel, live updates and a hostile name behave."""

import contextlib
import json
import re
import select
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from test_search import tiny_database

pytest.importorskip("starlette", reason="the dashboard runs on Starlette")

from evonorm_search.dashboard import create_app
from evonorm_search.export import export_source, provenance_of
from evonorm_search.graph import LayerGraph
from evonorm_search.store import Store, make_engine

HOSTILE = "<img src=x onerror=alert(1)>"  # a legal search name (no "/"), hostile in HTML
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evonorm_search", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def cli_json(*args: str):
    out = cli(*args, "--format", "json", timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def api(name: str, suffix: str = "") -> str:
    return f"/api/searches/{quote(name, safe='')}{suffix}"


@contextlib.contextmanager
def dashboard(url: str, *args: str, cwd: Path | None = None):
    """``evonorm-search dashboard`` on a free port; yields (base URL, the lines it printed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "evonorm_search", "dashboard", "--port", "0",
         *(["--db", url] if url else []), *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=cwd,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stderr], [], [], 1.0)
            if ready:
                lines.append(process.stderr.readline())
                found = re.search(r"dashboard: (http://\S+/)", lines[-1])
                if found:
                    if "--host" in args:  # the warning follows at once
                        lines.append(process.stderr.readline())
                    yield found.group(1).rstrip("/"), lines
                    return
            if process.poll() is not None:
                pytest.fail(f"the dashboard exited {process.returncode}: {''.join(lines)}"
                            f"{process.stderr.read()}")  # fmt: skip
        pytest.fail(f"the dashboard did not start in 60 s: {''.join(lines)}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The zoo and two searches on one tiny space, by the real pipeline, in one database."""
    return tiny_database(tmp_path_factory.mktemp("dashboard"), {"demo": 4, HOSTILE: 2})


@pytest.fixture(scope="module")
def client(searched):
    from starlette.testclient import TestClient

    with Store(searched, readonly=True) as store, TestClient(create_app(store)) as client:
        yield client


def dump(url: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
        return list(connection.iterdump())


# -- the JSON endpoints ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo", HOSTILE])
def test_the_json_endpoints_say_what_the_cli_says(searched, client, name):
    before = dump(searched)
    assert client.get("/api/searches").json() == cli_json("status", "--db", searched)
    assert client.get(api(name)).json() == cli_json("status", name, "--db", searched)
    pareto = ("pareto", name, "--db", searched)
    front = cli_json(*pareto)
    assert front and client.get(api(name, "/pareto")).json() == front
    assert (client.get(api(name, "/pareto?baselines=1")).json()
            == cli_json(*pareto, "--with-baselines"))  # fmt: skip
    assert (client.get(api(name, "/pareto?objectives=resnet,nodes")).json()
            == cli_json(*pareto, "--objectives", "resnet,nodes"))  # fmt: skip
    for row in front:
        shown = cli_json("show", str(row["id"]), "--db", searched)
        assert client.get(f"/api/candidates/{row['id']}").json() == shown
    assert dump(searched) == before  # reading never wrote


@pytest.mark.slow
def test_points_rate_and_siblings_say_how_the_search_went(client, searched):
    status = client.get(api("demo")).json()
    points = client.get(api("demo", "/points")).json()
    assert [p["id"] for p in points] == sorted(p["id"] for p in points)  # birth order
    assert len(points) == status["trained"]
    assert max(p["mean_score"] for p in points) == pytest.approx(status["best"]["mean_score"])
    assert status["per_minute"] > 0 and status["eta_s"] is None  # it completed
    assert status["per_minute"] == pytest.approx(60 * status["screened"] / status["elapsed_s"])
    # the other search on the space, not the baseline zoo's search
    (sibling,) = client.get(api("demo", "/siblings")).json()
    assert sibling["name"] == HOSTILE
    with Store(searched, readonly=True) as store:
        curve = store.best_so_far(HOSTILE)
    best = [b for *_, b in curve]
    assert best == sorted(best) and sibling["curve"][-1] == [len(curve), best[-1]]
    assert all([n, b] in [[m, c] for m, *_, c in curve] for n, b in sibling["curve"])
    zoo = client.get(api("demo", "/baselines")).json()
    assert "evonorm_s0" in {b["name"] for b in zoo if b["scores"]}


@pytest.mark.slow
@pytest.mark.parametrize(("path", "status", "message"), [
    ("/searches/nope", 404, "unknown search &#39;nope&#39;"),
    ("/api/searches/nope", 404, "unknown search 'nope'"),
    ("/api/searches/nope/pareto", 404, "unknown search 'nope'"),
    ("/candidates/99999", 404, "unknown candidate id 99999"),
    ("/api/candidates/99999", 404, "unknown candidate id 99999"),
    ("/candidates/abc", 404, "unknown candidate id abc"),
    ("/candidates/99999/layer.py", 404, "unknown candidate id 99999"),
    ("/api/searches/demo/pareto?objectives=bogus", 400, "bad objectives bogus"),
    ("/no/such/page", 404, "Not Found"),
])  # fmt: skip
def test_unknown_things_are_404s_never_tracebacks(client, path, status, message):
    response = client.get(path)
    assert response.status_code == status
    if path.startswith("/api/"):
        assert message in response.json()["error"]
    else:
        assert message in response.text and "Traceback" not in response.text


@pytest.mark.slow
def test_pages_show_database_text_escaped(client):
    page = client.get(f"/searches/{quote(HOSTILE, safe='')}")
    assert page.status_code == 200
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    (candidate, *_) = client.get(api(HOSTILE, "/pareto")).json()
    page = client.get(f"/candidates/{candidate['id']}")
    assert "<img src=x" not in page.text and f'data-search="{_escaped(HOSTILE)}"' in page.text


def _escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True).replace("&#x27;", "&#39;")


@pytest.mark.slow
def test_downloads_are_the_graph_its_module_and_its_drawing(client):
    (row, *_) = client.get(api("demo", "/pareto")).json()
    record = client.get(f"/api/candidates/{row['id']}").json()
    graph = client.get(f"/candidates/{row['id']}/graph.json")
    assert graph.headers["content-disposition"].startswith("attachment")
    assert LayerGraph.from_json(graph.text).structural_hash() == row["structural_hash"]
    module = client.get(f"/candidates/{row['id']}/layer.py")
    assert module.text == export_source(record["graph"], "EvolvedNormAct",
                                        provenance=provenance_of(record))  # fmt: skip
    compile(module.text, "layer.py", "exec")
    drawing = client.get(f"/candidates/{row['id']}/graph.svg")
    assert drawing.headers["content-type"] == "image/svg+xml" and b"<svg" in drawing.content


@pytest.mark.slow
def test_every_asset_is_served_by_the_dashboard_itself(client):
    (row, *_) = client.get(api("demo", "/pareto")).json()
    for page in ("/", "/searches/demo", f"/candidates/{row['id']}"):
        html = client.get(page).text
        for link in re.findall(r'(?:src|href)="([^"]*)"', html):
            assert link.startswith("/"), f"{page} links outside the dashboard: {link}"
            assert client.get(link).status_code == 200, link
    plotly = client.get("/static/plotly-basic.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000


# -- starting it -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "foreign", "unreachable"])
def test_a_database_that_cannot_be_used_stops_it_in_one_line(tmp_path, kind):
    path = tmp_path / "results.db"
    if kind == "foreign":
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("create table t (x)")
    url = {"unreachable": "postgresql://someone:s3cret@127.0.0.1:1/test"}.get(
        kind, f"sqlite:///{path}")  # fmt: skip
    out = cli("dashboard", "--db", url, "--port", "0", timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("evonorm-search: error: ")
    assert {"missing": "no database at", "foreign": "is not an evonorm-search database",
            "unreachable": "cannot connect"}[kind] in out.stderr  # fmt: skip
    assert "s3cret" not in out.stderr
    assert path.exists() == (kind == "foreign")  # never creates a database


def test_a_taken_port_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    assert cli("db", "upgrade", "--db", url, timeout=60).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("dashboard", "--db", url, "--port", str(port), timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_it_binds_loopback_unless_told_and_then_warns(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    assert cli("db", "upgrade", "--db", url, timeout=60).returncode == 0
    with dashboard(url) as (base, lines):
        assert base.startswith("http://127.0.0.1:") and "warning" not in "".join(lines)
    with dashboard(url, "--host", "0.0.0.0") as (base, lines):
        assert "warning: listening on 0.0.0.0" in "".join(lines)
        assert "no authentication" in "".join(lines)
        assert url not in "".join(lines)


# -- in the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium): "
                    "browser tests skipped")  # fmt: skip
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


@pytest.fixture(scope="module")
def served(searched):
    with dashboard(searched) as (base, _):
        yield base


FRONT_DRAWN = "document.getElementById('front-plot').dataset.frontIds !== undefined"


def open_search(page, base: str, name: str) -> None:
    page.goto(f"{base}/searches/{quote(name, safe='')}")
    page.wait_for_function(FRONT_DRAWN, timeout=20_000)


def front_of(page, searched: str, name: str) -> tuple[list[int], list[int]]:
    """The front's ids as the page drew them, and as the CLI says for the page's axes."""
    x, y = page.input_value("#objective-x"), page.input_value("#objective-y")
    drawn = page.evaluate("document.getElementById('front-plot').data[1].customdata")
    expected = cli_json("pareto", name, "--objectives", f"{x},{y}", "--db", searched)
    return drawn, [r["id"] for r in expected]


@pytest.mark.slow
def test_the_front_is_drawn_point_by_point_and_a_click_opens_the_candidate(page, served, searched):
    open_search(page, served, "demo")
    drawn, expected = front_of(page, searched, "demo")
    assert sorted(drawn) == sorted(expected) and expected
    points = page.locator("#front-plot .scatterlayer .trace:nth-child(2) path.point")
    assert points.count() == len(expected)
    box = points.nth(0).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(f"{served}/candidates/{drawn[0]}", timeout=10_000)
    record = cli_json("show", str(drawn[0]), "--db", searched)
    page.wait_for_function("document.querySelectorAll('#lineage li').length > 0")
    assert page.inner_text("#formula") == record["formula"]
    assert page.locator("#lineage li").count() == len(record["lineage"])
    baselines = [b for b in cli_json("pareto", "demo", "--with-baselines", "--db",
                                     searched)["baselines"] if b["scores"]]  # fmt: skip
    assert page.locator("#scores thead th").count() == 2 + len(baselines)


@pytest.mark.slow
def test_the_funnel_says_what_status_json_says(page, served, searched):
    open_search(page, served, "demo")
    status = cli_json("status", "demo", "--db", searched)
    shown = {row.get_attribute("data-stage"): int(row.locator("td.count").inner_text())
             for row in page.locator("#funnel tbody tr").all()}  # fmt: skip
    assert shown == {**status["stopped_at"], "queued": status["queued"],
                     "running": status["running"], "trained": status["trained"]}  # fmt: skip
    assert int(page.inner_text("#screened")) == status["screened"]
    assert int(page.inner_text("#trained")) == status["trained"]


@pytest.mark.slow
def test_a_hostile_name_shows_as_text(page, served):
    page.goto(served)
    page.get_by_role("link", name=HOSTILE).click()
    page.wait_for_function(FRONT_DRAWN, timeout=20_000)
    assert page.inner_text("h1") == HOSTILE
    assert HOSTILE in page.title()
    assert page.locator("img[src='x']").count() == 0 and page.dialogs == []


@pytest.mark.slow
def test_a_candidate_written_by_another_process_appears_without_a_reload(page, searched, tmp_path):
    copy = tmp_path / "copy.db"  # this test writes: keep the shared database as it is
    with contextlib.closing(sqlite3.connect(searched.removeprefix("sqlite:///"))) as source, \
            contextlib.closing(sqlite3.connect(copy)) as target:  # fmt: skip
        source.backup(target)
    url = f"sqlite:///{copy}"
    with dashboard(url) as (base, _):
        open_search(page, base, "demo")
        page.evaluate("window.notReloaded = true")
        trained = int(page.inner_text("#trained"))
        writer = (
            "from evonorm_search import LayerGraph\n"
            "from evonorm_search.store import Store\n"
            "g = LayerGraph.parse('x * sigmoid(v1 * x) / std_group(x)')\n"
            f"with Store({url!r}) as s:\n"
            "    i = s.add_candidate('demo', graph=g.to_json(), formula=g.formula(),\n"
            "                        status='queued', node_count=len(g.pruned().nodes))\n"
            "    s.set_fitness(i, {'resnet': 0.999})\n"
            "    print(i)\n"
        )
        out = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        new = int(out.stdout)
        page.wait_for_function(f"document.getElementById('trained').textContent == '{trained + 1}'",
                               timeout=10_000)  # fmt: skip
        page.wait_for_function(
            f"document.getElementById('best').textContent.includes('#{new}')", timeout=10_000
        )
        assert page.evaluate("window.notReloaded") is True


def test_a_database_lost_while_serving_is_a_503_and_it_keeps_serving():
    """PostgreSQL drops the dashboard's connections and then the database: each request
    answers one line with 503, never a traceback, and the server stays up."""
    import sqlalchemy as sa
    from starlette.testclient import TestClient

    from conftest import POSTGRES, postgres_database
    from store_data import populate

    databases = postgres_database()
    url = next(databases)
    try:
        with Store(url) as writer:
            populate(writer, "demo", candidates=10)
        with Store(url, readonly=True) as store, TestClient(create_app(store)) as client:
            assert client.get(api("demo")).status_code == 200
            admin = make_engine(POSTGRES).execution_options(isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(
                    sa.text(f'DROP DATABASE "{sa.make_url(url).database}" WITH (FORCE)')
                )
            admin.engine.dispose()
            for path in (api("demo"), "/searches/demo"):
                response = client.get(path)
                assert response.status_code == 503
                assert "Traceback" not in response.text and "database" in response.text
            assert client.get("/static/dashboard.css").status_code == 200
    finally:
        databases.close()
