"""Text from the database is shown as itself by every renderer: arbitrary printable search
names, reasons and formulas (brackets, ``$``, backslashes, quotes, ``<``, ``&``,
right-to-left marks) written straight into a store, then ``status``, ``show``, ``pareto``
(table, JSON, CSV, plot), ``report`` (HTML and Markdown), ``show --draw`` and the
dashboard's pages: exit 0, and the text appears literally (in the SVG's text, in the
rendered Markdown, in the page's element)."""

import csv
import html
import io
import json
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import matplotlib
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from evonorm_search import baselines
from evonorm_search.cli import cli
from evonorm_search.store import Store

SPECIAL = [
    *"[]$\\\"'<>&`*_|#~!%{}()",
    "\u200f",
    "\u200e",
    "[/nope]",
    "[red]",
    ":smile:",
    "$\\foo$",
    "&amp;",
    "<b>",
]
# Printable: letters, marks, numbers, punctuation, symbols, spaces (no control characters).
PRINTABLE = st.characters(categories=("L", "M", "N", "P", "S", "Zs"))
TEXT = st.lists(st.sampled_from(SPECIAL) | PRINTABLE, min_size=1, max_size=12).map("".join)
# Search names: no "/" and not "." or ".." (names are path segments of the dashboard's URLs);
# no surrounding spaces (a table pads its cells with spaces anyway).
NAMES = TEXT.filter(lambda s: "/" not in s and s.strip() == s and s not in (".", ".."))


def _run(*args: str) -> tuple[int, str, str]:
    """The CLI in this process; a name goes after ``--`` (it may start with "-")."""
    result = CliRunner().invoke(
        cli, list(args), prog_name="evonorm-search", env={"COLUMNS": "100000"}
    )
    return result.exit_code, result.stdout, result.stderr


class _Text(HTMLParser):
    """The text content of an HTML document, or of the element with id ``wanted``."""

    def __init__(self, wanted: str | None = None) -> None:
        super().__init__(convert_charrefs=True)
        self.wanted, self.depth, self.parts = wanted, 0 if wanted else 1, []

    def handle_starttag(self, tag, attrs):
        if self.depth:
            self.depth += tag not in ("br", "img", "meta", "link", "input")
        elif dict(attrs).get("id") == self.wanted:
            self.depth = 1

    def handle_endtag(self, tag):
        if self.depth and self.wanted:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def text_of(document: str, element: str | None = None) -> str:
    parser = _Text(element)
    parser.feed(document)
    return "".join(parser.parts)


def svg_text(path: Path) -> str:
    """The text drawn in an SVG written with ``svg.fonttype = none`` (text as text)."""
    return html.unescape(path.read_text(encoding="utf-8"))


def markdown_text(path: Path) -> str:
    from markdown_it import MarkdownIt

    return text_of(MarkdownIt("commonmark").enable("table").render(path.read_text("utf-8")))


def write_search(url: str, name: str, formula: str, reason: str) -> tuple[int, int]:
    """A search ``name`` with a trained candidate whose stored formula is ``formula`` and a
    rejected one whose reason and detail are ``reason``; returns their ids."""
    graph = baselines.get("evonorm_b0")
    with Store(url) as store:
        store.create_search(
            name,
            space="evonorm_b",
            strategy="evolution",
            seed=0,
            budget=2,
            architectures=["resnet", "mobilenet"],
            proxy_key="key",
        )
        trained = store.add_candidate(
            name, graph=graph.to_json(), formula=formula, status="queued", node_count=5
        )
        store.set_fitness(trained, {"resnet": 0.5, "mobilenet": 0.25})
        rejected = store.add_candidate(
            name, graph="{}", status="rejected", stage="static", reason=reason, detail=reason
        )
    return trained, rejected


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # drawn as a box: still text
@settings(max_examples=20)
@given(name=NAMES, formula=TEXT, reason=TEXT)
@example(name="ablation[lr] a", formula="x / std_group(x)", reason="[/nope] x")
@example(name="math $\\foo$ name", formula="$\\sqrt{x}$ & <b>", reason="a\u200fb ' \"")
@example(name="-[", formula="[", reason="[")
def test_database_text_is_shown_as_itself_everywhere(name, formula, reason):
    # Text in SVGs as text, to be read back (for this test only).
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        check_every_renderer(name, formula, reason)


def check_every_renderer(name: str, formula: str, reason: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        url = f"sqlite:///{directory / 'evonorm.db'}"
        trained, rejected = write_search(url, name, formula, reason)

        code, out, err = _run("status", "--db", url)
        assert code == 0 and name in out, err
        code, out, err = _run("status", "--db", url, "--", name)
        assert code == 0 and f"search {name}" in out and formula in out and reason in out, err
        code, out, err = _run("show", str(rejected), "--db", url)
        assert code == 0 and f"rejected at static: {reason} ({reason})" in out, err
        code, out, err = _run(
            "show", str(trained), "--db", url, "--draw", str(directory / "layer.svg")
        )
        assert code == 0 and f"of search {name}" in out and formula in out, err
        assert f"#{trained}  {formula}" in svg_text(directory / "layer.svg")

        code, out, err = _run("pareto", "--db", url, "--plot", str(directory / "f.svg"), "--", name)
        assert code == 0 and f"Pareto front of {name}: 1 candidates" in out and formula in out
        assert f"{name}: 1 on the front (red) of 1 trained" in svg_text(directory / "f.svg")
        code, out, _ = _run("pareto", "--db", url, "--format", "json", "--", name)
        assert code == 0 and json.loads(out)[0]["formula"] == formula
        code, out, _ = _run("pareto", "--db", url, "--format", "csv", "--", name)
        assert code == 0 and next(csv.DictReader(io.StringIO(out)))["formula"] == formula

        for suffix, read in (
            (".html", lambda p: text_of(p.read_text("utf-8"))),
            (".md", markdown_text),
        ):
            report = directory / f"report{suffix}"
            code, _, err = _run("report", "--db", url, "-o", str(report), "--", name)
            assert code == 0, err
            shown = read(report)
            assert f"Search {name}" in shown and formula in shown and reason in shown, shown

        pytest.importorskip("starlette", reason="the dashboard runs on Starlette")
        from starlette.testclient import TestClient

        from evonorm_search.dashboard import create_app

        with (
            Store(url, readonly=True) as store,
            TestClient(create_app(store), base_url="http://127.0.0.1") as client,
        ):
            page = client.get(f"/searches/{quote(name, safe='')}")
            assert page.status_code == 200 and text_of(page.text, "name") == name
            assert client.get(f"/api/searches/{quote(name, safe='')}").json()["name"] == name
            page = client.get(f"/candidates/{trained}")
            assert page.status_code == 200 and text_of(page.text, "formula") == formula
            assert text_of(page.text, "search-link") == name
            record = client.get(f"/api/candidates/{rejected}").json()
            assert record["reason"] == record["detail"] == reason
