"""The dashboard over a real (tiny) search: its JSON is the CLI's, its pages escape what the
database holds and answer 404s, it answers only the hosts it serves and sends its security
headers on every response, it refuses a bad start in one line, and in Debian's Chromium the
front, a click, the funnel, live updates and a hostile name behave, with no Content
Security Policy violation."""

import contextlib
import json
import re
import select
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from test_search import tiny_database

pytest.importorskip("starlette", reason="the dashboard runs on Starlette")

from evonorm_search.dashboard import create_app, host_names
from evonorm_search.dashboard.app import CSP, SVG_CSP
from evonorm_search.export import export_source, provenance_of
from evonorm_search.graph import LayerGraph
from evonorm_search.store import Store, make_engine

HOSTILE = "<img src=x onerror=alert(1)>"  # a legal search name (no "/"), hostile in HTML
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The test client's requests name 127.0.0.1 (its default "testserver" is no host it serves).
LOCAL = "http://127.0.0.1"
FOREIGN = "evil.example"  # a DNS-rebinding page's host
STATIC = Path(__file__).parent.parent / "evonorm_search" / "dashboard" / "static"


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evonorm_search", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
        [
            sys.executable,
            "-m",
            "evonorm_search",
            "dashboard",
            "--port",
            "0",
            *(["--db", url] if url else []),
            *args,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
    )
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
                pytest.fail(
                    f"the dashboard exited {process.returncode}: {''.join(lines)}"
                    f"{process.stderr.read()}"
                )
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

    with (
        Store(searched, readonly=True) as store,
        TestClient(create_app(store), base_url=LOCAL) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def empty(tmp_path_factory):
    """An empty database at the current schema."""
    url = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'results.db'}"
    assert cli("db", "upgrade", "--db", url, timeout=60).returncode == 0
    return url


@pytest.fixture(scope="module")
def store(empty):
    with Store(empty, readonly=True) as store:
        yield store


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
    assert client.get(api(name, "/pareto?baselines=1")).json() == cli_json(
        *pareto, "--with-baselines"
    )
    assert client.get(api(name, "/pareto?objectives=resnet,nodes")).json() == cli_json(
        *pareto, "--objectives", "resnet,nodes"
    )
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
@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/searches/nope", 404, "unknown search &#39;nope&#39;"),
        ("/api/searches/nope", 404, "unknown search 'nope'"),
        ("/api/searches/nope/pareto", 404, "unknown search 'nope'"),
        ("/candidates/99999", 404, "unknown candidate id 99999"),
        ("/api/candidates/99999", 404, "unknown candidate id 99999"),
        ("/candidates/abc", 404, "unknown candidate id abc"),
        ("/candidates/99999/layer.py", 404, "unknown candidate id 99999"),
        ("/api/searches/demo/pareto?objectives=bogus", 400, "bad objectives bogus"),
        ("/no/such/page", 404, "Not Found"),
    ],
)
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
    assert module.text == export_source(
        record["graph"], "EvolvedNormAct", provenance=provenance_of(record)
    )
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


# -- hosts and security headers ----------------------------------------------------------


def local_client(app, **options):
    """A test client whose requests name 127.0.0.1."""
    from starlette.testclient import TestClient

    return TestClient(app, base_url=LOCAL, **options)


def directives(policy: str) -> dict[str, str]:
    return {d.split()[0]: " ".join(d.split()[1:]) for d in policy.split(";") if d.strip()}


def assert_secured(response, policy: str = CSP) -> None:
    """The response carries the dashboard's security headers, ``policy`` as its CSP."""
    assert response.headers["x-content-type-options"] == "nosniff", response.url
    assert response.headers["x-frame-options"] == "DENY", response.url
    assert response.headers["content-security-policy"] == policy, response.url


class _Inline(HTMLParser):
    """The inline code of a page: <style> elements, style and on* attributes, <script>
    elements without src."""

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        names = {name for name, _ in attrs}
        if tag == "style" or (tag == "script" and "src" not in names):
            self.found.append(f"<{tag}>")
        self.found += [f"{tag} {n}=" for n in names if n == "style" or n.startswith("on")]


def inline_code(html: str) -> list[str]:
    parser = _Inline()
    parser.feed(html)
    return parser.found


def test_the_policy_allows_only_the_dashboards_own_files():
    policy = directives(CSP)
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["base-uri"] == policy["form-action"] == "'none'"
    assert "unsafe" not in CSP and "*" not in CSP and "http" not in CSP
    drawing = directives(SVG_CSP)  # graph.svg: inline styles, nothing else
    assert drawing["default-src"] == "'none'" and drawing["frame-ancestors"] == "'none'"
    assert set(drawing) == {"default-src", "style-src", "frame-ancestors", "sandbox"}


@pytest.mark.parametrize("path", ["/", "/api/searches", "/static/dashboard.js"])
@pytest.mark.parametrize(
    "host",
    [
        FOREIGN,
        f"{FOREIGN}:8080",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "<b>evil</b>",
        "",
    ],
)
def test_a_foreign_host_is_a_400_that_echoes_nothing(store, host, path):
    """A DNS-rebinding page's requests name its own host: refused, whatever the path."""
    with local_client(create_app(store)) as client:
        response = client.get(path, headers={"Host": host})
    assert response.status_code == 400
    assert response.text == "Invalid host header"
    assert response.headers["content-type"].startswith("text/plain")
    assert_secured(response)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8080", "localhost", "localhost:8080", "LocalHost:1", "[::1]:8080"],
)
def test_loopback_hosts_with_any_port_are_answered(store, host):
    with local_client(create_app(store)) as client:
        for path in ("/", "/api/searches", "/static/dashboard.css"):
            assert client.get(path, headers={"Host": host}).status_code == 200, path


def test_allowed_hosts_are_the_hosts_answered(store):
    app = create_app(store, allowed_hosts=["dash.example.org", "*.lab.example"])
    with local_client(app) as client:

        def status(host: str) -> int:
            return client.get("/api/searches", headers={"Host": host}).status_code

        assert status("dash.example.org:443") == status("DASH.example.org") == 200
        assert status("node1.lab.example") == 200
        assert status("127.0.0.1") == status("example.org") == status("evil-lab.example") == 400
    from starlette.testclient import TestClient

    with TestClient(create_app(store)) as client:  # the default: no "testserver"
        assert client.get("/api/searches").status_code == 400
    with pytest.raises(ValueError, match="any Host"):
        create_app(store, allowed_hosts=["*"])


def test_host_names_are_loopback_the_host_served_and_allow_host():
    loopback = ["127.0.0.1", "localhost", "[::1]"]
    assert host_names("127.0.0.1", "127.0.0.1") == loopback
    assert host_names("MyHost.LAN", "192.168.1.5") == [*loopback, "myhost.lan", "192.168.1.5"]
    assert host_names("2001:db8::0:1", "2001:db8::1") == [*loopback, "[2001:db8::1]"]
    # every interface: the machine's names are not known, only loopback and --allow-host
    assert host_names("0.0.0.0", "0.0.0.0", ["dash.lan"]) == [*loopback, "dash.lan"]
    assert host_names("::", "::") == loopback


def test_every_response_carries_nosniff_and_the_policy(store):
    class Broken:
        """A store whose every query fails unexpectedly (a 500)."""

        def __getattr__(self, name):
            def fail(*args):
                raise RuntimeError("boom: an unexpected failure")

            return fail

    with local_client(create_app(store)) as client:
        responses = {
            path: client.get(path)
            for path in (
                "/",
                "/api/searches",
                "/static/dashboard.js",
                "/static/plotly.css",
                "/static/favicon.svg",
                "/searches/nope",
                "/api/searches/nope",
                "/candidates/abc",
                "/api/searches/x/pareto?objectives=bogus",
                "/no/such/page",
            )
        }
        responses["foreign"] = client.get("/", headers={"Host": FOREIGN})
    with local_client(create_app(Broken()), raise_server_exceptions=False) as client:
        responses["500 page"] = client.get("/searches/x")
        responses["500 api"] = client.get("/api/searches")
    statuses = {path: response.status_code for path, response in responses.items()}
    assert set(statuses.values()) == {200, 400, 404, 500}, statuses
    for response in responses.values():
        assert_secured(response)
    assert all("boom" not in responses[k].text for k in ("500 page", "500 api"))


@pytest.mark.slow
def test_pages_and_downloads_carry_the_headers_and_no_inline_code(client):
    (row, *_) = client.get(api("demo", "/pareto")).json()
    pages = [
        "/",
        "/searches/demo",
        f"/searches/{quote(HOSTILE, safe='')}",
        f"/candidates/{row['id']}",
        "/searches/nope",
    ]
    for path in pages:
        response = client.get(path)
        assert_secured(response)
        assert inline_code(response.text) == [], path
    assert 'id="plotly.js-style-global" class="no-inline-styles"' in client.get(pages[1]).text
    for suffix in ("graph.json", "layer.py"):
        assert_secured(client.get(f"/candidates/{row['id']}/{suffix}"))
    assert_secured(client.get(api("demo")))
    assert_secured(client.get(f"/candidates/{row['id']}/graph.svg"), SVG_CSP)


def _plotly_rules(bundle: str) -> list[tuple[str, str]]:
    """The (selector, declarations) that plotly.js's build/plotcss module inserts, in its
    order, as the bundle writes them: an object literal of selectors (X and Y standing for
    the plot's and the notifier's classes) iterated by the loop that expands them."""
    string = r"""(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')"""
    entry = re.compile(rf"\s*(?:{string}|([A-Za-z_$][\w$]*))\s*:\s*{string}\s*([,}}])")
    start = bundle.index('{"X,X div":')
    loop = re.compile(
        r'for\((\w+) in \w+\)\w+=\1\.replace\(/\^,/," ,"\)'
        r'\.replace\(/X/g,"([^"]*)"\)\.replace\(/Y/g,"([^"]*)"\)'
    )
    x, y = loop.search(bundle, start).group(2, 3)
    rules, at = [], start + 1
    while True:
        found = entry.match(bundle, at)
        key = next(g for g in found.group(1, 2, 3) if g is not None)
        value = next(g for g in found.group(4, 5) if g is not None)
        rules.append((re.sub("^,", " ,", key).replace("X", x).replace("Y", y), value))
        at = found.end()
        if found.group(6) == "}":
            return rules


def test_plotly_css_holds_the_rules_plotly_would_inject():
    """static/plotly.css is the bundle's own stylesheet, in the order plotly.js would leave
    it in its <style> (each rule inserted first), and the bundle inserts nothing when the page
    holds an element with its id and class no-inline-styles (search.html's <link>)."""
    bundle = (STATIC / "plotly-basic.min.js").read_text()
    rules = _plotly_rules(bundle)
    css = re.sub(r"/\*.*?\*/", "", (STATIC / "plotly.css").read_text(), flags=re.S)
    written = [(s.strip(), d) for s, d in re.findall(r"([^{}]+)\{([^{}]*)\}", css)]
    assert len(rules) > 50 and written == rules[::-1]
    skips = (
        r'"plotly\.js-style-"\+\w+,(\w+)=document\.getElementById\(\w+\);'
        r'if\(!\(\1&&\1\.matches\("\.no-inline-styles"\)\)\)'
    )
    assert re.search(skips, bundle)


# -- starting it -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "foreign", "unreachable"])
def test_a_database_that_cannot_be_used_stops_it_in_one_line(tmp_path, kind):
    path = tmp_path / "results.db"
    if kind == "foreign":
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("create table t (x)")
    url = {"unreachable": "postgresql://someone:s3cret@127.0.0.1:1/test"}.get(
        kind, f"sqlite:///{path}"
    )
    out = cli("dashboard", "--db", url, "--port", "0", timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("evonorm-search: error: ")
    assert {
        "missing": "no database at",
        "foreign": "is not an evonorm-search database",
        "unreachable": "cannot use postgresql://someone:***@",
    }[kind] in out.stderr
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


def get(url: str, host: str | None = None) -> tuple[int, str, Any]:
    """GET ``url`` (with that Host header): its status, body and headers."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode(), e.headers


def test_it_binds_loopback_unless_told_and_then_warns(empty):
    with dashboard(empty) as (base, lines):
        assert base.startswith("http://127.0.0.1:") and "warning" not in "".join(lines)
    with dashboard(empty, "--host", "0.0.0.0") as (base, lines):
        said = "".join(lines)
        assert "warning: listening on 0.0.0.0" in said and "no authentication" in said
        assert empty not in said
        # on every interface it answers the loopback names only, and says how to add one
        assert "answers only requests addressed to 127.0.0.1, localhost, [::1]" in said
        assert "pass --allow-host for each other name or address clients use" in said
        local = base.replace("0.0.0.0", "127.0.0.1")
        assert get(f"{local}/api/searches")[0] == 200
        assert get(f"{local}/api/searches", "dash.lan")[0] == 400
    with dashboard(empty, "--host", "0.0.0.0", "--allow-host", "dash.lan") as (base, lines):
        assert "addressed to 127.0.0.1, localhost, [::1], dash.lan (pass" in "".join(lines)
        local = base.replace("0.0.0.0", "127.0.0.1")
        assert get(f"{local}/api/searches", f"dash.lan:{local.rsplit(':', 1)[1]}")[0] == 200


def test_the_real_dashboard_answers_its_hosts_and_allow_host_only(empty):
    allow = (
        "--allow-host",
        "Dash.Example.org",
        "--allow-host",
        "*.lab.example",
        "--allow-host",
        "2001:DB8::1",
    )
    with dashboard(empty, *allow) as (base, _):
        port = base.rsplit(":", 1)[1]
        for host in (
            None,
            f"localhost:{port}",
            "dash.example.org",
            f"dash.example.org:{port}",
            "node1.lab.example:443",
            f"[2001:db8::1]:{port}",
        ):
            status, _, headers = get(f"{base}/api/searches", host)
            assert status == 200, host
            assert headers["Content-Security-Policy"] == CSP
        for host in (FOREIGN, f"{FOREIGN}:{port}", "example.org", "lab.example"):
            status, body, headers = get(f"{base}/", host)
            assert (status, body) == (400, "Invalid host header"), host
            assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", ["*", "dash.lan:8080", "http://dash.lan", "dash.lan/x", "", "a b"])
def test_an_allow_host_that_is_no_host_name_is_one_line(empty, name):
    out = cli("dashboard", "--db", empty, "--port", "0", "--allow-host", name, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"evonorm-search: error: --allow-host {name!r} is not a host")


# -- in the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install -y chromium): browser tests skipped"
        )
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Reports every Content-Security-Policy violation of each document to the test.
WATCH_CSP = """document.addEventListener("securitypolicyviolation", (e) => window.cspViolation(
  `${e.violatedDirective} ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber} ${e.sample}`));"""


@pytest.fixture
def page(browser):
    """A page under the dashboard's real Content-Security-Policy, keeping its dialogs,
    console messages, uncaught errors and CSP violations."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.dialogs, page.console, page.violations = [], [], []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("console", lambda message: page.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: page.console.append(f"pageerror: {error}"))
    page.expose_function("cspViolation", lambda text: page.violations.append(text))
    page.add_init_script(WATCH_CSP)
    yield page
    context.close()


def wait_until(page, expression: str, timeout: float = 20_000) -> None:
    """Polls ``expression`` in the page until it is true: page.wait_for_function evaluates
    its text with eval(), which the dashboard's Content-Security-Policy refuses."""
    from playwright.sync_api import Error

    deadline, error = time.monotonic() + timeout / 1000, None
    while True:
        try:  # the page being left, or the next not there yet, fails: ask again
            if page.evaluate(expression):
                return
        except Error as e:
            error = e
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout / 1000:.0f} s: {expression} ({error})")
        page.wait_for_timeout(100)


@pytest.fixture(scope="module")
def served(searched):
    with dashboard(searched) as (base, _):
        yield base


FRONT_DRAWN = "document.getElementById('front-plot').dataset.frontIds !== undefined"


def open_search(page, base: str, name: str) -> None:
    page.goto(f"{base}/searches/{quote(name, safe='')}")
    wait_until(page, FRONT_DRAWN)


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
    wait_until(page, "document.querySelectorAll('#lineage li').length > 0")
    assert page.inner_text("#formula") == record["formula"]
    assert page.locator("#lineage li").count() == len(record["lineage"])
    baselines = [
        b
        for b in cli_json("pareto", "demo", "--with-baselines", "--db", searched)["baselines"]
        if b["scores"]
    ]
    assert page.locator("#scores thead th").count() == 2 + len(baselines)


@pytest.mark.slow
def test_the_funnel_says_what_status_json_says(page, served, searched):
    open_search(page, served, "demo")
    status = cli_json("status", "demo", "--db", searched)
    shown = {
        row.get_attribute("data-stage"): int(row.locator("td.count").inner_text())
        for row in page.locator("#funnel tbody tr").all()
    }
    assert shown == {
        **status["stopped_at"],
        "queued": status["queued"],
        "running": status["running"],
        "trained": status["trained"],
    }
    assert int(page.inner_text("#screened")) == status["screened"]
    assert int(page.inner_text("#trained")) == status["trained"]
    # Where the worker time went, as status says it (hours, to two decimals).
    fates = {
        row.get_attribute("data-fate"): row.locator("td.count").inner_text()
        for row in page.locator("#worker-time tbody tr").all()
    }
    spent = sum(status["worker_by_fate"].values())
    assert fates == {
        **{f: f"{s / 3600:.2f}" for f, s in status["worker_by_fate"].items()},
        "orchestration": f"{max(status['worker_seconds'] - spent, 0) / 3600:.2f}",
    }
    assert "trained" in fates
    assert page.inner_text("#worker-hours") == f"{status['worker_seconds'] / 3600:.2f}"
    assert float(page.inner_text("#yield")) == pytest.approx(
        status["trained_per_worker_hour"], abs=0.05
    )


@pytest.mark.slow
def test_a_hostile_name_shows_as_text(page, served):
    page.goto(served)
    page.get_by_role("link", name=HOSTILE).click()
    wait_until(page, FRONT_DRAWN)
    assert page.inner_text("h1") == HOSTILE
    assert HOSTILE in page.title()
    assert page.locator("img[src='x']").count() == 0 and page.dialogs == []


@pytest.mark.slow
def test_the_pages_keep_to_the_content_security_policy(page, served, searched):
    """The searches page, a search's page (both plots drawn, the funnel's bars, the plot's
    PNG download), a candidate's page and its drawing raise no CSP violation and log no
    error in Chromium, under the policy every response carries; plotly.js inserts no
    <style> (it takes static/plotly.css); and the policy is enforced."""
    response = page.goto(served)
    assert response.headers["content-security-policy"] == CSP
    wait_until(page, "document.querySelectorAll('#searches tbody tr').length > 0")
    open_search(page, served, "demo")
    drawn, expected = front_of(page, searched, "demo")
    front = page.locator("#front-plot .scatterlayer .trace:nth-child(2) path.point")
    assert sorted(drawn) == sorted(expected) and front.count() == len(expected) > 0
    trained = cli_json("status", "demo", "--db", searched)["trained"]
    curve = page.locator("#curve-plot .scatterlayer .trace:nth-child(2) path.point")
    assert curve.count() == trained > 0  # the best-so-far plot's markers
    assert page.evaluate("document.querySelectorAll('style').length") == 0
    modebar = "getComputedStyle(document.querySelector('#front-plot .modebar')).position"
    assert page.evaluate(modebar) == "absolute"  # plotly.css's rule
    bars = page.evaluate("[...document.querySelectorAll('#funnel .bar')].map(b => b.style.width)")
    assert bars and any(width not in ("", "0%") for width in bars)
    page.hover("#front-plot")
    with page.expect_download(timeout=20_000) as download:  # draws through a blob: image
        page.click("#front-plot .modebar-btn[data-title='Download plot as a PNG']")
    assert download.value.suggested_filename.endswith(".png")
    page.goto(f"{served}/candidates/{drawn[0]}")
    wait_until(page, "document.querySelectorAll('#lineage li').length > 0")
    wait_until(page, "document.getElementById('drawing').complete")
    assert page.evaluate("document.getElementById('drawing').naturalWidth") > 0
    response = page.goto(f"{served}/candidates/{drawn[0]}/graph.svg")  # opened on its own
    assert response.headers["content-security-policy"] == SVG_CSP
    page.wait_for_timeout(500)
    assert page.violations == [] and page.console == [] and page.dialogs == []
    # and the browser enforces the policy: an inline style attribute is refused
    page.goto(served)
    page.evaluate("document.body.setAttribute('style', 'color: red')")
    page.wait_for_timeout(300)
    assert any(v.startswith("style-src-attr inline") for v in page.violations), page.violations


@pytest.mark.slow
def test_a_candidate_written_by_another_process_appears_without_a_reload(page, searched, tmp_path):
    copy = tmp_path / "copy.db"  # this test writes: keep the shared database as it is
    with (
        contextlib.closing(sqlite3.connect(searched.removeprefix("sqlite:///"))) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
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
        out = subprocess.run(
            [sys.executable, "-c", writer], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        new = int(out.stdout)
        wait_until(
            page,
            f"document.getElementById('trained').textContent == '{trained + 1}'",
            timeout=10_000,
        )
        wait_until(
            page, f"document.getElementById('best').textContent.includes('#{new}')", timeout=10_000
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
        with (
            Store(url, readonly=True) as store,
            TestClient(create_app(store), base_url=LOCAL) as client,
        ):
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
                assert_secured(response)
            assert client.get("/static/dashboard.css").status_code == 200
    finally:
        databases.close()
