"""Where the data folders (kernels/, search_spaces/, db/) are at run time.

In a wheel they are copied into ``evonorm_search/_data/`` (see pyproject's
``force-include``); in an editable checkout they sit beside the package at the repository
root.  This is the only place that knows both layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

__all__ = ["resource_dir"]

_PACKAGE = Path(__file__).resolve().parent
DataFolder = Literal["kernels", "search_spaces", "db"]


def resource_dir(name: DataFolder) -> Path:
    """The directory holding the shipped data folder ``name``."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"evonorm-search data folder {name!r} not found in {_PACKAGE / '_data'} or "
        f"{_PACKAGE.parent}; the installation is incomplete, reinstall the package"
    )
