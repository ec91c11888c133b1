"""The live view of a running search (rich): funnel counts, trials running, best so far per
architecture, rate and ETA.  Redrawn in place on a terminal; elsewhere (a log file, CI)
rich prints the final state once."""

from __future__ import annotations

import time
from typing import Any

from evonorm_search.search.driver import Progress
from evonorm_search.worker_time import shares, yield_line

__all__ = ["LiveView"]


class LiveView:
    """A context manager whose ``update(progress)`` is the driver's progress callback."""

    def __init__(self, name: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.name = name
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=2, transient=False)
        self.progress: Progress | None = None

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.live.update(self.render(self.progress))
        self.live.__exit__(*exc)

    def update(self, progress: Progress) -> None:
        self.progress = progress
        self.live.update(self.render(progress), refresh=False)

    def render(self, p: Progress) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        elapsed = time.monotonic() - p.started
        rate = p.trained_now / elapsed * 60 if elapsed > 0 else 0.0
        left = p.budget - p.trained
        eta = f"{left / rate:.1f} min" if rate > 0 and left > 0 else "-"
        summary = Text(
            f"search {self.name}: {p.trained}/{p.budget} trained, {p.screened} "
            f"screened, {len(p.running)} running, {rate:.2f} trained/min, "
            f"ETA {eta}; {'evolving' if p.evolving else 'initial population'}\n"
            f"{yield_line(p.trained, p.worker_seconds, p.worker_hours)}: "
            f"{shares(p.by_fate, p.worker_seconds)}"
        )
        table = Table()
        table.add_column("stage: fate")
        table.add_column("count", justify="right")
        # Text, not str: a stage, reason or name is never read as rich markup.
        for key, count in sorted(p.stages.items(), key=lambda kv: -kv[1]):
            table.add_row(Text(key), str(count))
        for architecture, best in sorted(p.best.items()):
            table.add_row(Text(f"best {architecture}"), f"{best:.4f}")
        return Group(summary, table)
