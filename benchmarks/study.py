"""What the benchmarks that take hours share (learning_signal, fidelity, transfer_diagnosis,
evolution_vs_random): units appended to a JSON-lines file the moment each finishes, so that
a study continues over several sittings (a rerun skips what is done) and its data can be
committed; the command line; CIFAR-10's place; figures written to disk."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

# Beside the checkout, as this project's machines have it (``--data-dir`` elsewhere).
CIFAR10 = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py")


def commands(doc: str) -> tuple[Any, Any]:
    """An argument parser described by the script's docstring's first paragraph, and its
    subcommands (one required)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    return parser, parser.add_subparsers(dest="command", required=True)


def save(fig: Any, path: Path) -> None:
    """A matplotlib figure laid out and written to ``path`` (folders made as needed)."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def done(path: Path, key: Callable[[dict], Hashable], *, repair: bool = False) -> dict:
    """The rows written so far, by ``key``, without a last line cut short by a kill (or
    being written).  ``repair`` (only for the file's one writer, before it appends) drops
    that line from the file, so that the next row starts on a line of its own."""
    if not path.is_file():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        if repair:
            path.write_text(text)
    rows = (json.loads(line) for line in text.splitlines() if line.strip())
    return {key(row): row for row in rows}


def run(
    function: Callable[[Any], dict],
    jobs: list,
    path: Path,
    processes: int,
    hours: float | None,
    describe: Callable[[dict], str],
) -> bool:
    """``function`` over ``jobs`` in ``processes`` spawned processes, each result appended
    to ``path`` (flushed and synced) as it comes; stops after ``hours`` (the first unit to
    finish after them ends the run, the others are lost).  Returns whether every job ran."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if hours is None else time.monotonic() + hours * 3600
    print(f"{len(jobs)} to do, {processes} processes; appending to {path}", flush=True)
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool, path.open("a") as out:
        for n, row in enumerate(pool.imap_unordered(function, jobs), 1):
            out.write(json.dumps(row, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
            print(
                f"  {n}/{len(jobs)} {describe(row)} {(time.perf_counter() - start) / n:.1f} s each",
                flush=True,
            )
            if deadline is not None and time.monotonic() > deadline:
                print("time is up: rerun to continue", flush=True)
                pool.terminate()
                return n == len(jobs)
    return True


def transfer_run(
    graph: str,
    seed: int,
    learning_rate: float,
    settings: dict,
    data_dir: str,
    space: str = "evonorm_b",
) -> dict:
    """One transfer run as ``evonorm-search transfer`` trains it (its worker's function, on
    one thread, without checkpoints): ``graph`` on the settings' first network at
    ``learning_rate`` and ``seed``.  Accuracy 0 on every split where it diverged."""
    import torch

    from evonorm_search.search.transfer import transfer_trial

    torch.set_num_threads(1)
    start = time.perf_counter()
    report = transfer_trial(
        {
            "candidate": 0,
            "graph": graph,
            "phase": "final",
            "network": settings["networks"][0],
            "seed": seed,
            "learning_rate": learning_rate,
            "space": space,
            "dataset": settings["dataset"],
            "data_dir": data_dir,
            "preset": None,
            "settings": settings,
            "key": "benchmark",
            "checkpoint_minutes": 1e9,
            "checkpoint": None,
        },
        lambda progress: None,
    )
    splits = report.get("splits") or {}
    completed = report["status"] == "completed"
    return {
        "status": report["status"],
        "learning_rate": learning_rate,
        "transfer_val": splits["transfer_val"]["accuracy"] if completed else 0.0,
        "curve": report.get("curve"),
        "steps": report["steps"],
        "seconds": report["seconds"],
        "wall_s": round(time.perf_counter() - start, 3),
        "splits": splits or None,
        "settings": settings,
        "code_version": report.get("code_version"),
    }
