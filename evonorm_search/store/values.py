"""Values on their way into the store: checked against their columns, made JSON-safe."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from evonorm_search.errors import StoreError


def column_length(column: Any) -> int | None:
    """The most characters a VARCHAR column holds (None for TEXT)."""
    return getattr(column.property.columns[0].type, "length", None)


def fits(column: Any, value: str | None) -> str | None:
    """``value`` if it fits ``column``, else a StoreError naming both: PostgreSQL would
    refuse the write (and with it a whole batch), SQLite would store it silently."""
    limit = column_length(column)
    if value is not None and limit is not None and len(value) > limit:
        name = f"{column.property.columns[0].table.name}.{column.key}"
        raise StoreError(
            f"{name} holds at most {limit} characters, got {len(value)}: {value[:40]!r}..."
        )
    return value


def finite(value: float | None) -> float | None:
    """NaN and infinities are stored as NULL (PostgreSQL's JSON and some drivers refuse
    them, and a diverged run's loss is not a number to compare)."""
    return value if value is None or np.isfinite(value) else None


def jsonable(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plain JSON object: non-finite floats become None, tuples lists, others strings."""

    def clean(v: Any) -> Any:
        if isinstance(v, float | np.floating):
            return float(v) if np.isfinite(v) else None
        if isinstance(v, bool | int | str) or v is None:
            return v
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, datetime):
            return v.isoformat()
        return str(v)

    return clean(dict(values or {}))


def raw_text(source: Any) -> str:
    if isinstance(source, str):
        return source
    try:
        return json.dumps(source)
    except (TypeError, ValueError):
        return repr(source)
