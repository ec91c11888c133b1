"""The error hierarchy: one root, one subclass per kind of bad input.

Each subclass also inherits the built-in a caller would expect (``GraphError`` is a
``ValueError``), so ``except ValueError`` keeps working.  The CLI turns any
``EvoNormError`` into one line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "EvoNormError",
    "GraphError",
    "KernelCacheError",
    "NotFoundError",
    "SpaceError",
    "StoreError",
]


class EvoNormError(Exception):
    """Root of every error evonorm-search raises on purpose."""


class GraphError(EvoNormError, ValueError):
    """A layer graph (JSON, formula or genome) is malformed or is not a valid layer."""


class SpaceError(EvoNormError, ValueError):
    """A search-space file is missing, is not valid TOML, or breaks the schema."""


class StoreError(EvoNormError, RuntimeError):
    """The results database cannot be used: a malformed or unreachable URL, a schema at
    another revision than this code's, or an unknown search or candidate."""


class NotFoundError(StoreError, LookupError):
    """No search or candidate by that name or id (a 404 in the dashboard)."""


class KernelCacheError(EvoNormError, RuntimeError):
    """The kernel cache directory cannot be used safely: another user owns it or may write
    into it (its files are imported as code), or it cannot be created."""
