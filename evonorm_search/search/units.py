"""Independent training units on Ray Tune, for the stages after a search (re-evaluation,
transfer): the trainable that runs a unit on a worker, and the driver side that hands units
out and records what comes back.

A unit is a JSON-able ``request`` and the dotted name of the worker function that runs it,
``function(request, report_progress) -> report``.  Workers never touch the database:
``report_progress`` sends a unit's intermediate state (a transfer run's checkpoint) to the
driver, which stores it; the final report is recorded by the driver too.  The same runner
as the search and ``retune`` (``tuner.tune_run``): local or a cluster, ``--workers``,
``--gpus-per-trial``.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Unit", "UnitSource", "decode_bytes", "encode_bytes", "run_units"]


@dataclass
class Unit:
    label: str  # for progress lines
    worker: str  # "module:function"
    request: dict[str, Any]


class UnitSource(Protocol):
    """What ``run_units`` drives: units handed out while any is ready, each one's progress
    and report handed back."""

    def next_unit(self) -> Unit | None: ...  # None: nothing ready now

    def finished(self) -> bool: ...

    def progress(self, unit: Unit, progress: dict[str, Any]) -> None: ...

    def complete(self, unit: Unit, report: dict[str, Any]) -> None: ...


def encode_bytes(data: bytes) -> str:
    """Bytes (a checkpoint) as text for a JSON report."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _trainable(config: dict[str, Any]) -> None:
    """A unit on a worker.  An exception is the unit's report (``error``), not a retry."""
    from ray import tune

    module, name = config["worker"].split(":")
    function = getattr(importlib.import_module(module), name)

    def report_progress(progress: dict[str, Any]) -> None:
        tune.report({"progress": json.dumps(progress)})

    try:
        report = function(config["request"], report_progress)
    except Exception as e:
        report = {"error": " ".join(f"{type(e).__name__}: {e}".split())[:500]}
    tune.report({"report": json.dumps(report)})


class _UnitDriver:
    """The search driver's interface for ``tuner._searcher``: ``finished``, ``suggest``,
    ``complete``, and ``intermediate_result`` for a unit's progress."""

    def __init__(self, source: UnitSource) -> None:
        self.source = source
        self.running: dict[str, Unit] = {}

    def finished(self) -> bool:
        return not self.running and self.source.finished()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        unit = self.source.next_unit()
        if unit is None:
            return None
        self.running[trial_id] = unit
        return {"worker": unit.worker, "request": unit.request}

    def intermediate_result(self, trial_id: str, result: dict[str, Any]) -> None:
        unit = self.running.get(trial_id)
        if unit is not None and "progress" in (result or {}):
            self.source.progress(unit, json.loads(result["progress"]))

    def complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        unit = self.running.pop(trial_id)
        ok = result is not None and "report" in result and not error
        report = json.loads(result["report"]) if ok else {"error": "its process died"}
        self.source.complete(unit, report)


def run_units(
    source: UnitSource,
    *,
    name: str,
    workers: int = 1,
    gpus_per_trial: float = 0.0,
    address: str | None = None,
    max_failures: int = 2,
) -> bool:
    """Run ``source``'s units on Ray Tune (local, or the cluster at ``address``); returns
    whether it was interrupted (Ctrl-C).  A unit whose process died is retried up to
    ``max_failures`` times, from its last checkpoint where it keeps one."""
    from evonorm_search.search.tuner import tune_run

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Checkpoints travel in results: Tune's own result files would write them again.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    analysis = logging.getLogger("ray.tune.analysis.experiment_analysis")
    analysis.addFilter(_without_result_files)
    try:
        return tune_run(
            _trainable,
            _UnitDriver(source),
            name=name,
            scratch_prefix=f"evonorm-{name}-",
            workers=workers,
            resources={"cpu": 1, "gpu": gpus_per_trial},
            cpus=workers,
            max_failures=max_failures,
            address=address,
        )
    finally:
        analysis.removeFilter(_without_result_files)


def _without_result_files(record: logging.LogRecord) -> bool:
    """Tune's complaint, at the end, that it cannot read the result files turned off above
    (a line per unit): units report through the driver, so it is noise."""
    return not record.getMessage().startswith("Failed to fetch metrics")
