"""Processes this project starts never import code from the user's working directory.

Python puts the current directory first on ``sys.path`` for ``python -m``, and Ray puts the
driver's working directory on every worker's ``sys.path``: a ``torch.py`` (or a stray
``evonorm_search/`` checkout) in the folder where a user types ``evonorm-search run`` would
run in every trial.  So a Python subprocess runs with ``-P`` (no unsafe path; ``PYTHONPATH``
is kept) in a directory of its own, and Ray is started from an empty private directory.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["neutral_directory", "python_module_command", "started_from_neutral_directory"]


def python_module_command(module: str, *args: str) -> list[str]:
    """``python -P -m module args...`` with this interpreter: the current directory is not
    put on ``sys.path`` (run it with a ``cwd`` of its own too)."""
    return [sys.executable, "-P", "-m", module, *args]


@functools.cache
def neutral_directory() -> Path:
    """An empty directory private to this process (mode 0700), removed at exit: the
    working directory of the processes Ray starts for it."""
    path = Path(tempfile.mkdtemp(prefix="evonorm-neutral-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@contextlib.contextmanager
def started_from_neutral_directory() -> Iterator[Path]:
    """Run the block (``ray.init``) with ``neutral_directory()`` as the working directory,
    then return to the caller's: Ray records the driver's directory for its workers'
    ``sys.path``, and a local Ray's processes inherit it as theirs."""
    here = os.getcwd()
    os.chdir(neutral_directory())
    try:
        yield neutral_directory()
    finally:
        os.chdir(here)
