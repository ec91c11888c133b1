"""Where a search's worker time goes: the trial stages that take it, a trial's fate as the
time is accounted, and the one-line summaries that ``status``, the live view and the
dashboard show, so that a search spending its time on rejections is seen as one.

Worker time is wall time x workers, over every sitting (what ``--worker-hours`` counts);
the trials' own seconds, by fate, are part of it, and the rest (scheduling, start-up, slots
idle while the driver screens) is orchestration.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["TRIAL_STAGES", "fate_of", "shares", "trial_seconds", "yield_line"]

# The trial stages that take worker time, disjoint; "proxy" is the quality check and full
# training together, in records written before the learning-signal stage existed.
TRIAL_STAGES = ("compile", "signal", "quality", "training", "proxy")


def trial_seconds(seconds: Mapping[str, object]) -> float:
    """A candidate's worker time in its trial (not the driver's screening)."""
    return sum(float(seconds.get(stage) or 0.0) for stage in TRIAL_STAGES)  # type: ignore[arg-type]


def fate_of(status: str, stage: str | None, reason: str | None) -> str:
    """A trial's outcome as worker time is accounted: ``trained``, ``rejected at STAGE``,
    ``diverged`` or ``failed`` (its process raised or died)."""
    if status == "trained":
        return "trained"
    if status == "failed":
        return "diverged" if (reason or "").startswith("diverged") else "failed"
    return f"{status} at {stage}" if stage else status


def shares(by_fate: Mapping[str, float], worker_seconds: float) -> str:
    """``trained 59%, rejected at quality 28%, ...`` of the worker time, largest first, the
    rest as orchestration."""
    if worker_seconds <= 0:
        return "-"
    parts = sorted(by_fate.items(), key=lambda kv: -kv[1])
    rest = max(worker_seconds - sum(by_fate.values()), 0.0)
    text = [f"{fate} {seconds / worker_seconds:.0%}" for fate, seconds in parts]
    return ", ".join([*text, f"orchestration {rest / worker_seconds:.0%}"])


def yield_line(trained: int, worker_seconds: float, budget_hours: float | None) -> str:
    """``0.42 h of worker time (budget 1 h), 14.3 trained per worker-hour``."""
    hours = worker_seconds / 3600
    budget = f" (budget {budget_hours:g} h)" if budget_hours else ""
    rate = f", {trained / hours:.1f} trained per worker-hour" if hours > 0 else ""
    return f"{hours:.2f} h of worker time{budget}{rate}"
