"""The wheel ships the data folders inside the one importable package, and the resource
helper finds them there as well as in this editable checkout."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from evonorm_search.resources import resource_dir

ROOT = Path(__file__).resolve().parents[1]


def test_editable_checkout_finds_the_data_folders():
    for name in ("kernels", "search_spaces", "db"):
        assert resource_dir(name) == ROOT / name


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling", reason="the dev extra (hatchling) builds the wheel")
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("evonorm_search-*.whl")
    return path


@pytest.mark.slow
def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top_level == {"evonorm_search"}  # no importable kernels/, db/ or tests/
    for space in ("evonorm_b", "evonorm_s", "sequence"):
        assert f"evonorm_search/_data/search_spaces/{space}.toml" in names
    assert "evonorm_search/_data/kernels/README.md" in names
    for migration in (
        "README.md",
        "env.py",
        "script.py.mako",
        "versions/0001_initial.py",
        "versions/0002_evaluation_node.py",
        "versions/0003_unbounded_text.py",
        "versions/0004_search_progress.py",
        "versions/0005_transfer.py",
    ):
        assert f"evonorm_search/_data/db/{migration}" in names
    dashboard = ROOT / "evonorm_search" / "dashboard"
    assets = [
        p.relative_to(ROOT).as_posix()
        for p in dashboard.rglob("*")
        if p.is_file() and p.suffix in (".html", ".js", ".css", ".svg")
    ]
    assert len(assets) >= 9 and set(assets) <= set(names)  # templates and static files
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "evonorm-search = evonorm_search.cli:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )


@pytest.mark.slow
def test_installed_wheel_finds_its_data(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import evonorm_search\n"
        "from evonorm_search.resources import resource_dir\n"
        "from evonorm_search.space import load_space, list_spaces\n"
        "print(evonorm_search.__file__)\n"
        "print(resource_dir('search_spaces'))\n"
        "print(load_space('evonorm_b').path)\n"
        "print(','.join(list_spaces()))\n"
        "from evonorm_search.store import Store\n"
        "Store('sqlite:///wheel.db').close()\n"  # migrations run from the wheel's db/
        "print(resource_dir('db'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    package, spaces_dir, space_path, names, db_dir = out.stdout.split()
    assert package.startswith(str(site))
    assert spaces_dir == str(site / "evonorm_search" / "_data" / "search_spaces")
    assert space_path.startswith(spaces_dir)
    assert names == "evonorm_b,evonorm_s,sequence"
    assert db_dir == str(site / "evonorm_search" / "_data" / "db")
    assert (tmp_path / "wheel.db").stat().st_size > 0
