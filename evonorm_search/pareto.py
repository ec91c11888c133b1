"""Non-dominated filtering for the Pareto front (numpy only; all objectives maximised).

A point dominates another when it is at least as good in every objective and better in
one.  Equal points do not dominate each other, so duplicates of a front point are all on
the front.  Objectives to be minimised (a cost) are negated by the caller.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dominates", "non_dominated"]

_CHUNK = 512


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether points ``a`` (..., d) dominate points ``b`` (..., d), broadcasting."""
    return np.all(a >= b, axis=-1) & np.any(a > b, axis=-1)


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` (n, d).

    Points are visited by decreasing sum of objectives, ties broken lexicographically: a
    dominator has a larger sum (or, rounded, an equal one and a lexicographically larger
    vector), so a point can only be dominated by points visited before it, and the front
    grows monotonically.  First the front of the best-summed points culls everything in
    a few whole-array passes (on typical data almost every point falls there); the
    survivors are then visited in chunks, each culled against the front found so far and
    then compared within itself.  Cost O(n * |front| * d).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must be (n, d), got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("objective values must be finite")
    order = np.lexsort((*(-points[:, ::-1].T), -points.sum(axis=1)))
    columns = np.ascontiguousarray(points[order].T)  # column-wise: fast over n
    alive = np.ones(len(order), dtype=bool)
    head = points[order[:_CHUNK]]
    for f in head[~dominates(head[None, :, :], head[:, None, :]).any(axis=1)]:
        at_most = np.logical_and.reduce([c <= v for c, v in zip(columns, f, strict=True)])
        below = np.logical_or.reduce([c < v for c, v in zip(columns, f, strict=True)])
        alive &= ~(at_most & below)
    order = order[alive]
    front: list[np.ndarray] = []
    front_points = np.empty((0, points.shape[1]))
    for start in range(0, len(order), _CHUNK):
        chunk = order[start : start + _CHUNK]
        p = points[chunk]
        if len(front_points):
            keep = ~dominates(front_points[None, :, :], p[:, None, :]).any(axis=1)
            chunk, p = chunk[keep], p[keep]
        if len(chunk) > 1:
            keep = ~dominates(p[None, :, :], p[:, None, :]).any(axis=1)
            chunk, p = chunk[keep], p[keep]
        front.append(chunk)
        front_points = np.concatenate([front_points, p])
    return np.sort(np.concatenate(front)) if front else np.empty(0, dtype=np.int64)
