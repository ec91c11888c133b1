"""Reports of a real (tiny) search: HTML with its figures inlined and every database text
escaped, Markdown with its figures beside it, one-line errors."""

import base64
import re
import subprocess
import sys

import pytest
from test_search import tiny_database

pytest.importorskip("ray", reason="the search runs on Ray")

NAME = "<img src=x onerror=alert(1)>"  # a legal search name (no "/"), hostile in HTML


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evonorm_search", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    return directory, tiny_database(directory, {NAME: 3})


def test_the_html_report_is_one_file_with_every_text_escaped(searched):
    from evonorm_search.store import Store

    directory, url = searched
    out = cli("report", NAME, "-o", str(directory / "report.html"), "--top", "2", "--db", url)
    assert out.returncode == 0, out.stderr
    page = (directory / "report.html").read_text()
    assert NAME not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2 + 2  # funnel, front, and the two top layers' drawings
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    with Store(url, readonly=True) as store:
        best = store.top(NAME, 2)
        status = store.status(NAME)
        zoo = store.baseline_layers(NAME)
    assert zoo and "<h2>Against the baselines</h2>" in page
    for b in zoo:  # each baseline on the search's protocol, with its mean accuracy
        assert f"<td>{b['name']}" in page
        assert b["mean_score"] is None or f"{b['mean_score']:.3f}" in page
    for c in best:  # the top layers' formulas (escaped) and scores
        assert c["formula"].replace(">", "&gt;").replace("<", "&lt;") in page
        assert f"{c['mean_score']:.3f}" in page
    assert f"<td>trained / budget</td><td>{status['trained']} / 3</td>" in page


def test_the_markdown_report_keeps_its_figures_beside_it(searched):
    directory, url = searched
    out = cli("report", NAME, "-o", str(directory / "report.md"), "--db", url)
    assert out.returncode == 0, out.stderr
    text = (directory / "report.md").read_text()
    assert text.startswith("# Search \\<img src=x onerror=alert(1)\\>")
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "report_files/funnel.png" in figures and "report_files/front.png" in figures
    assert all((directory / f).read_bytes().startswith(b"\x89PNG") for f in figures)


@pytest.mark.parametrize(
    ("name", "output", "message"),
    [
        ("nope", "r.html", "unknown search 'nope'"),
        (NAME, "r.pdf", "a report is .html or .md"),
        (NAME, "missing/r.md", "no directory"),
    ],
)
def test_bad_requests_get_one_line(searched, name, output, message):
    directory, url = searched
    out = cli("report", name, "-o", str(directory / output), "--db", url)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.splitlines()) == 1
    assert not (directory / "r_files").exists()
