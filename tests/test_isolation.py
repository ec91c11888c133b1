"""No process the project starts imports code from the user's working directory: not the
interpreter probe of `compile`, not the Ray workers of `run`, both started from a folder
holding a planted ``torch.py`` and ``evonorm_search/`` that leave a mark when imported."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_search import TINY_SPACE

PLANT = """import os, pathlib
pathlib.Path({mark!r}).open("a").write(f"{{__name__}} imported in process {{os.getpid()}}\\n")
"""


@pytest.fixture
def planted(tmp_path):
    """A working directory holding a planted torch.py and evonorm_search package; returns
    (the folder, the file they write to when imported)."""
    folder, mark = tmp_path / "work", tmp_path / "imported.txt"
    (folder / "evonorm_search").mkdir(parents=True)
    (folder / "torch.py").write_text(PLANT.format(mark=str(mark)))
    (folder / "evonorm_search" / "__init__.py").write_text(PLANT.format(mark=str(mark)))
    return folder, mark


def evonorm_search(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command as a user types it (its launcher does not put the working
    directory on sys.path; `python -P -m` where there is no launcher)."""
    launcher = Path(sys.executable).with_name("evonorm-search")
    command = (
        [str(launcher)] if launcher.is_file() else [sys.executable, "-P", "-m", "evonorm_search"]
    )
    env = {**os.environ, "EVONORM_KERNEL_CACHE": str(cwd.parent / "kernels")}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="compile needs triton")
def test_compile_verifies_without_importing_the_working_directory(planted):
    folder, mark = planted
    out = evonorm_search("compile", "x / std_group(x)", "--verify", cwd=folder)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "verified against the eager layer in triton's interpreter: yes" in out.stdout
    assert not mark.exists(), mark.read_text()


@pytest.mark.slow
def test_a_search_runs_its_trials_without_importing_the_working_directory(planted):
    pytest.importorskip("ray", reason="the search runs on Ray")
    folder, mark = planted
    space = folder.parent / "tiny.toml"
    space.write_text(TINY_SPACE)
    url = f"sqlite:///{folder.parent / 'search.db'}"
    out = evonorm_search(
        "run", "--name", "planted", "--space", str(space), "--budget", "1", "--db", url, cwd=folder
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "search planted: completed, 1/1 trained" in out.stdout
    assert not mark.exists(), mark.read_text()
