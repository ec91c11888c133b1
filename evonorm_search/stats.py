"""Means with intervals over seeds, and paired comparisons corrected for multiplicity.

A result over seeds is reported as its mean with a Student-t interval.  Layers trained on
the same seeds (a seed fixes the initial weights and the data order for every layer alike)
are compared pairwise: each candidate's differences to one comparator, seed by seed, give a
paired t-interval and a two-sided p-value; with several candidates the p-values are
adjusted by Holm's step-down procedure (which controls the family-wise error rate without
assuming independence), and the interval is widened to the Bonferroni level ``1 - alpha/m``
so that it agrees with the most conservative step of Holm's.  A candidate *beats* the
comparator only when its Holm-adjusted p-value is below ``alpha`` and its mean difference
is positive.  Pure functions of plain numbers; scipy supplies the t distribution.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Comparison", "Interval", "compare_paired", "holm", "interval_text", "mean_interval"]


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided t-interval at ``level``; ``low``/``high`` are None with
    fewer than two values (no spread to estimate)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    level: float

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else self.high - self.mean

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "level": self.level,
        }


def _t_quantile(level: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of ``values`` with its Student-t interval (``n - 1`` degrees of freedom)."""
    if not values:
        raise ValueError("no values to average")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Interval(mean, None, None, n, level)
    half = _t_quantile(level, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest p is
    multiplied by ``m - i + 1`` (i from 1), made monotone, and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda k: p_values[k])
    adjusted, running = [0.0] * m, 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[k]))
        adjusted[k] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    """One candidate against the comparator on their shared seeds.

    ``difference`` is the mean of candidate minus comparator with its per-comparison
    t-interval; ``simultaneous`` the same at level ``1 - alpha / m`` (m candidates compared);
    ``p`` the paired t-test's two-sided p-value and ``p_holm`` it adjusted; ``verdict``
    ``better``, ``worse`` or ``no difference`` at family-wise error ``alpha``."""

    name: str
    seeds: tuple[int, ...]
    difference: Interval
    simultaneous: Interval
    p: float | None
    p_holm: float | None
    verdict: str

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "seeds": list(self.seeds),
            "difference": self.difference.to_dict(),
            "simultaneous": self.simultaneous.to_dict(),
            "p": self.p,
            "p_holm": self.p_holm,
            "verdict": self.verdict,
        }


def _paired_p(differences: Sequence[float]) -> float | None:
    """The two-sided p-value of a paired t-test that the mean difference is 0; None with
    fewer than two pairs.  Identical differences have no spread: p is 0 when they are not
    all zero, else 1."""
    from scipy.stats import t

    n = len(differences)
    if n < 2:
        return None
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    if sd == 0:
        return 0.0 if mean != 0 else 1.0
    return float(2 * t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def compare_paired(
    comparator: Mapping[int, float],
    candidates: Mapping[str, Mapping[int, float]],
    *,
    alpha: float = 0.05,
) -> list[Comparison]:
    """Each candidate (its score per seed) against ``comparator`` (score per seed) on the
    seeds both have, in the order given.  Seeds one side lacks are left out of that pair
    (a run that failed); a candidate with no shared seed is an error."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    m = len(candidates)
    pairs: dict[str, tuple[tuple[int, ...], list[float]]] = {}
    for name, scores in candidates.items():
        seeds = tuple(sorted(set(scores) & set(comparator)))
        if not seeds:
            raise ValueError(f"{name} shares no seed with the comparator")
        pairs[name] = (seeds, [scores[s] - comparator[s] for s in seeds])
    p_values = {name: _paired_p(d) for name, (_, d) in pairs.items()}
    testable = [name for name, p in p_values.items() if p is not None]
    adjusted = dict(zip(testable, holm([p_values[n] for n in testable]), strict=True))
    result = []
    for name, (seeds, differences) in pairs.items():
        p_holm = adjusted.get(name)
        mean = statistics.fmean(differences)
        significant = p_holm is not None and p_holm < alpha and mean != 0
        verdict = ("better" if mean > 0 else "worse") if significant else "no difference"
        result.append(
            Comparison(
                name,
                seeds,
                mean_interval(differences, 1 - alpha),
                mean_interval(differences, 1 - alpha / m),
                p_values[name],
                p_holm,
                verdict,
            )
        )
    return result


def interval_text(interval: Mapping[str, object] | None) -> str:
    """An ``Interval.to_dict()`` as people read it: ``0.7312 [0.7101, 0.7523] (n=5)``."""
    if interval is None:
        return "-"
    if interval["low"] is None:
        return f"{interval['mean']:.4f} (n={interval['n']})"
    return (
        f"{interval['mean']:.4f} [{interval['low']:.4f}, {interval['high']:.4f}] "
        f"(n={interval['n']})"
    )
