"""Which code produced a result: the package version and, from a git checkout, its commit.

Stored with every evaluation (and every search), so that code changed between the sittings
of a long search, or between a search and its transfer runs, is visible in the results.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ["__version__", "code_version"]

__version__ = "0.1.0"  # pyproject.toml's version; the package re-exports it


@functools.cache
def code_version() -> str:
    """``VERSION+gCOMMIT`` (12 hex digits; ``.dirty`` when tracked files differ from it) for
    a package imported from a git checkout, else the package version: at most 40
    characters, the store's column."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return __version__

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"[:40]
