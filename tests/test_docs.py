"""The docs' examples run, their tables say what the code does, and their links lead somewhere.

The docs are the README and the site's pages under docs/ (mkdocs.yml builds them): each check
reads the block or table it needs from whichever page holds it."""

import json
import os
import re
import subprocess
import sys
import tomllib
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from evonorm_search import baselines
from evonorm_search.cli import cli
from evonorm_search.ops import AXIS_KINDS, ELEMENTWISE, STATISTICS
from evonorm_search.space import load_space

ROOT = Path(__file__).resolve().parents[1]
# Every page, by its path from the root: the README first, then docs/ in path order.
PAGES = {
    path.relative_to(ROOT).as_posix(): path.read_text()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
}
FENCED = r"```{language}\n(.*?)```"


def blocks(language: str, page: str | None = None) -> list[str]:
    """The fenced blocks in ``language`` on ``page``, or on every page."""
    texts = PAGES.values() if page is None else [PAGES[page]]
    return [b for text in texts for b in re.findall(FENCED.format(language=language), text, re.S)]


def placed(language: str) -> list:
    """Every block in ``language`` as a parameter named by its page and place there."""
    return [
        pytest.param(block, id=f"{page}:{i}")
        for page in PAGES
        for i, block in enumerate(blocks(language, page))
    ]


def table_rows(first_header: str) -> list[list[str]]:
    """Cells of the one markdown table, on any page, whose header row starts with
    ``| first_header |``."""
    ((lines, start),) = [
        (lines, i)
        for lines in (text.splitlines() for text in PAGES.values())
        for i, line in enumerate(lines)
        if line.startswith(f"| {first_header} |")
    ]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("code", placed("python"))
def test_python_examples_run_on_their_own(code):
    """Each block runs in a fresh interpreter, as a reader copying it would."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    if "x ** 2" in code:
        assert "operator Pow after column 1 is not supported" in out.stdout


def test_toml_example_is_a_valid_space_with_the_defaults(tmp_path):
    (example,) = blocks("toml")
    path = tmp_path / "example.toml"
    path.write_text(example)
    space = load_space(path)
    minimal = tmp_path / "minimal.toml"
    minimal.write_text('description = "my space"\n[graph]\n')
    default = load_space(minimal)
    sections = (
        "graph",
        "mutation",
        "proxy",
        "training",
        "rejection",
        "search",
        "signal",
        "compile",
        "transfer",
    )
    for section in sections:
        assert getattr(space, section) == getattr(default, section), section
    assert set(tomllib.loads(example)) == {"description", "tensor", *sections}


def test_json_example_parses():
    from evonorm_search import LayerGraph

    (example,) = blocks("json")
    assert LayerGraph.from_json(example).formula() == "x * sigmoid(v1 * x) / std_group(x)"


def test_op_table_matches_the_registry():
    rows = {row[0]: row for row in table_rows("op")}
    assert set(rows) == set(ELEMENTWISE) | set(STATISTICS)
    for name, op in {**ELEMENTWISE, **STATISTICS}.items():
        _, arity, _, computes, numerics = rows[name]
        assert (int(arity), computes, numerics) == (op.arity, op.summary, op.numerics), name


def test_axis_table_matches_the_registry():
    rows = table_rows("axis")
    assert [row[0] for row in rows] == list(AXIS_KINDS)
    for name, reduces, varies, known_as in rows:
        kind = AXIS_KINDS[name]
        assert (reduces, varies, known_as) == (kind.reduces, kind.varies, kind.known_as), name


def test_baseline_table_matches_the_zoo():
    rows = table_rows("name")
    assert [row[0] for row in rows] == baselines.names()
    for name, formula, _ in rows:
        assert formula == baselines.describe(name).formula


@pytest.mark.parametrize(
    "line",
    [
        line[2:]
        for block in blocks("console")
        for line in block.splitlines()
        if line.startswith("$ evonorm-search")
    ],
)
def test_cli_examples(line):
    import shlex

    args = shlex.split(line)[1:]
    result = CliRunner().invoke(cli, args, prog_name="evonorm-search")
    expected_error = "x ** 2" in line
    assert result.exit_code == (2 if expected_error else 0), result.stderr


def test_quick_start_commands_are_what_ci_runs():
    setup, tests = blocks("bash", "README.md")[:2]
    assert setup.strip() == (
        "bash scripts/setup.sh && .venv/bin/evonorm-search run --name quick --budget 8 "
        "--population 6 --initial baselines --workers 2 && .venv/bin/evonorm-search pareto quick"
    )
    assert tests.strip() == "bash scripts/setup.sh --dev && .venv/bin/python -m pytest"
    assert tests.strip() in (ROOT / ".ci" / "run").read_text()


def test_the_sites_home_page_has_the_readmes_quick_start():
    assert blocks("bash", "docs/index.md")[:2] == blocks("bash", "README.md")[:2]


def test_formula_sample_output_is_current():
    from evonorm_search import LayerGraph
    from evonorm_search.hashing import functional_hash

    (sample,) = [b for b in blocks("text") if "structural hash" in b]
    g = LayerGraph.parse("x * sigmoid(v1 * x) / std_group(x)")
    assert f"│ structural hash  │ {g.structural_hash()} " in sample
    assert f"│ functional hash  │ {functional_hash(g)} " in sample


def evonorm_search(
    *args: str, cwd: Path, timeout: int = 120, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m evonorm_search ARGS`` in ``cwd``, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "evonorm_search", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_the_main_job_runs_a_search_that_the_query_commands_read(tmp_path):
    """The quick start's main job (after setup), in a fresh directory: a real search on the
    digits to its budget, then its Pareto front, status and a candidate."""
    setup = blocks("bash", "README.md")[0].strip()
    commands = [c.strip().removeprefix(".venv/bin/") for c in setup.split("&&")[1:]]
    env = {**os.environ, "EVONORM_KERNEL_CACHE": str(tmp_path / "kernels")}
    for command in commands:
        out = evonorm_search(*command.split()[1:], cwd=tmp_path, env=env, timeout=1500)
        assert out.returncode == 0, out.stderr[-3000:]
    status = evonorm_search("status", "quick", "--format", "json", cwd=tmp_path)
    summary = json.loads(status.stdout)
    assert summary["status"] == "completed" and summary["trained"] == summary["budget"] == 8
    assert "compile" in summary["stopped_at"]
    best = summary["best"]["id"]
    front = evonorm_search("pareto", "quick", "--format", "json", cwd=tmp_path)
    assert best in {c["id"] for c in json.loads(front.stdout)}  # the best mean is never dominated
    shown = evonorm_search("show", str(best), cwd=tmp_path)
    assert shown.returncode == 0 and "traffic" in shown.stdout
    exported_into_a_resnet(tmp_path, best)
    served_by_the_dashboard(tmp_path, "quick", best)  # skips where there is no Chromium


def exported_into_a_resnet(directory: Path, best: int) -> None:
    """The docs' export of the main job's best candidate with its kernels, dropped into
    examples/resnet.py's ResNet (fewer steps), on the CPU: it trains, and says it ran
    PyTorch ops."""
    (command,) = [b.strip() for b in blocks("bash") if "examples/resnet.py" in b]
    export, train = command.split(" && ")
    export = export.split()
    export[2] = str(best)  # the docs show their own run's best candidate
    out = evonorm_search(*export[1:], cwd=directory, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "with its Triton kernels" in out.stdout
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script, *args = train.split()[1:]  # run from the repository's root in the docs
    out = subprocess.run(
        [sys.executable, str(ROOT / script), *args, "--steps", "30"],
        env=env,
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line[:22].strip(): line[22:].split() for line in out.stdout.splitlines()[4:]}
    assert set(rows) == {"BatchNorm2d + ReLU", "EvolvedNormAct"}, out.stdout
    assert all(0.0 <= float(accuracy) <= 1.0 for _, accuracy, _ in rows.values())
    assert "EvolvedNormAct runs in PyTorch ops on cpu tensors" in out.stderr


def served_by_the_dashboard(directory: Path, name: str, best: int) -> None:
    """After the main job, `evonorm-search dashboard` (default database) serves its pages
    and its JSON, and in Chromium the search's front and the best candidate's page draw.
    With EVONORM_SCREENSHOTS=DIR the browser's screenshots of both go to DIR (the
    docs' come from here)."""
    import urllib.request

    from test_dashboard import CHROMIUM, CHROMIUM_ARGS, FRONT_DRAWN, dashboard, wait_until

    with dashboard("", cwd=directory) as (base, _):
        for path in ("/", f"/searches/{name}", f"/candidates/{best}", f"/api/searches/{name}"):
            with urllib.request.urlopen(base + path, timeout=30) as response:
                assert response.status == 200, path
        if not CHROMIUM.exists():
            pytest.skip(f"no Chromium at {CHROMIUM}: the dashboard was not opened in a browser")
        from playwright.sync_api import sync_playwright

        shots = os.environ.get("EVONORM_SCREENSHOTS")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/searches/{name}")
            wait_until(page, FRONT_DRAWN)
            x, y = page.input_value("#objective-x"), page.input_value("#objective-y")
            drawn = page.evaluate("document.getElementById('front-plot').data[1].customdata")
            with urllib.request.urlopen(
                f"{base}/api/searches/{name}/pareto?objectives={x},{y}", timeout=30
            ) as response:
                assert sorted(drawn) == sorted(r["id"] for r in json.load(response))
            assert int(page.inner_text("#trained")) == 8
            if shots:
                page.screenshot(path=Path(shots) / "dashboard-search.png", full_page=True)
            page.goto(f"{base}/candidates/{best}")
            wait_until(page, "document.querySelectorAll('#lineage li').length > 0")
            wait_until(page, "document.getElementById('drawing').complete")
            if shots:
                page.screenshot(path=Path(shots) / "dashboard-candidate.png", full_page=True)
            browser.close()


def unfenced(text: str) -> str:
    """``text`` without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def prose(text: str) -> str:
    """``text`` without its fenced blocks and code spans, where a link is not a link."""
    return re.sub(r"`[^`\n]*`", "", unfenced(text))


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings that GitHub and the site (Python-Markdown's toc)
    agree on, so that a link to one works in both."""
    found = set()
    for heading in re.findall(r"^#+ (.*)$", unfenced(text), flags=re.M):
        words = re.sub(r"[*`]", "", heading).strip()
        github = re.sub(r"[^\w\- ]", "", words.lower()).replace(" ", "-")
        ascii_words = unicodedata.normalize("NFKD", words).encode("ascii", "ignore").decode()
        site = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_words).strip().lower())
        if github == site:
            found.add(site)
    return found


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_lead_to_files_and_headings(page):
    """Every relative link or image on the page names a file that exists and, with an anchor,
    a heading of that page; links with a scheme (https:, mailto:) are not checked."""
    broken = []
    for target in re.findall(r"\]\(([^()\s]+)\)", prose(PAGES[page])):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (ROOT / page).parent / path if path else ROOT / page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and not (file.suffix == ".md" and anchor in anchors(file.read_text())):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


@pytest.mark.parametrize("page", [page for page in PAGES if page.startswith("docs/")])
def test_lists_and_tables_start_a_block(page):
    """On the site's pages a list or table follows a blank line, and a nested list item is
    indented by 4 spaces: Python-Markdown, unlike GitHub, reads a list or table right after a
    paragraph line as more of the paragraph, and a 2-space nested list as a flat one."""
    item = re.compile(r"(- |\d+\. )")
    wrong = []
    lines = unfenced(PAGES[page]).splitlines()
    for before, line in zip(["", *lines], lines, strict=False):
        follows_text = before.strip() and not before.startswith(" ")
        if item.match(line) and follows_text and not item.match(before):
            wrong.append(f"a list right after a paragraph: {line[:60]}")
        if line.startswith("|") and before.strip() and not before.startswith("|"):
            wrong.append(f"a table right after a paragraph: {line[:60]}")
        if re.match(r" {1,3}(- |\d+\. )", line):
            wrong.append(f"a list item nested by fewer than 4 spaces: {line[:60]}")
    assert not wrong, wrong
