"""How the commands print: tables, JSON and CSV, scores, a candidate, and the one-line
notes and errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from evonorm_search.stats import interval_text

PROGRAM = "evonorm-search"


def fail(message: str, code: int = 2) -> None:
    """One line on stderr (white space folded), then exit ``code``."""
    note(f"error: {' '.join(message.split())}")
    sys.exit(code)


def say(line: str) -> None:
    """A line of progress on stderr."""
    click.echo(line, err=True)


def note(message: str) -> None:
    """One line on stderr, beside the command's output."""
    say(f"{PROGRAM}: {message}")


def print_table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table whose every string is shown as itself: text from the database (names,
    reasons, formulas) is never read as rich markup (``[red]``) or emoji codes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if title is not None:  # a line of its own: a table would wrap it to the table's width
        console.print(Text(title, style="bold"), soft_wrap=True)
    table = Table(show_lines=False)
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def print_csv(
    rows: list[dict[str, Any]],
    objectives: list[str],
    baseline_rows: list[dict[str, Any]] | None = None,
) -> None:
    """The front's rows; with ``baseline_rows`` (even none) a last column ``baseline``
    that names the zoo layer of each of those rows, appended after the front's."""
    import csv

    extra = baseline_rows is not None
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["id", *objectives, "mean_score", "formula", *(["baseline"] * extra)])
    for r in [*rows, *(baseline_rows or [])]:
        writer.writerow(
            [
                r["id"],
                *[r["objectives"][o] for o in objectives],
                r["mean_score"],
                r["formula"],
                *([r.get("name", "")] * extra),
            ]
        )


def score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def objective(value: float | int | None) -> str:
    return str(value) if isinstance(value, int) else score(value)


def fate(row: dict[str, Any]) -> str:
    """What a baseline row's scores are, when they are not its own training's."""
    if row.get("twin") is not None:
        return f"  (FEC hit of {row['twin']})"
    if row.get("status", "trained") != "trained":
        return f"  ({row['status']} at {row['stage']})"
    return ""


def compiled_summary(c: dict[str, Any] | None) -> str:
    """The compile stage's figures in one line."""
    if not c:
        return "-"
    kernels = (
        f"{c['kernels']} kernels for {c['target']}, {c['registers']} registers, "
        f"{c['spill_bytes']} B spilled, {c['compile_s']:.2f} s; "
        if c["kernels"]
        else ""
    )
    return (
        f"{kernels}traffic {c['traffic_fwd']}/{c['traffic_bwd']} at "
        f"{','.join(map(str, c['shape']))} {c['dtype']}; kernels {c['kernel_hash']}"
        + ("; verified" if c["verified"] else "")
    )


def print_candidate(r: dict[str, Any]) -> None:
    """A candidate's record (``Store.candidate``) as tables: its fate and figures, its
    evaluations, its transfer and its lineage."""
    ended = r["status"] + (f" at {r['stage']}" if r["stage"] else "")
    ended += f": {r['reason']}" if r["reason"] else ""
    scores = r["scores"] or {}
    print_table(
        f"candidate {r['id']} of search {r['search']}",
        ["", "value"],
        [
            ["formula", r["formula"] or f"(did not parse) {r['graph']}"],
            ["fate", ended + (f" ({r['detail']})" if r["detail"] else "")],
            ["scores", ", ".join(f"{a} {score(v)}" for a, v in scores.items()) or "-"],
            ["mean accuracy", score(r["mean_score"])],
            ["on the Pareto front", "yes" if r["on_front"] else "no"],
            ["duplicate of", str(r["duplicate_of"]) if r["duplicate_of"] else "-"],
            ["nodes", str(r["node_count"]) if r["node_count"] is not None else "-"],
            ["structural hash", r["structural_hash"] or "-"],
            ["functional hash", r["functional_hash"] or "-"],
            ["compiled", compiled_summary(r.get("compiled"))],
        ],
    )
    if r["evaluations"]:
        print_table(
            "evaluations",
            ["stage", "architecture", "seed", "steps", "accuracy", "status", "node"],
            [
                [
                    e["stage"],
                    e["architecture"],
                    str(e["seed"]),
                    str(e["steps"]),
                    score(e["accuracy"]),
                    e["status"],
                    (e.get("node") or "-")[:16],
                ]
                for e in r["evaluations"]
            ],
        )
    if r.get("transfer"):
        print_table(
            "transfer: accuracy, mean [95% t-interval] over seeds",
            ["network", "lr", "seeds", "transfer-validation", "transfer-test", "test"],
            [
                [
                    t["network"],
                    f"{t['learning_rate']:g}",
                    f"{t['completed']} of {len(t['seeds'])}",
                    interval_text(t["transfer_val"]),
                    interval_text(t["transfer_test"]),
                    interval_text(t["test"]),
                ]
                for t in r["transfer"]
            ],
        )
    print_table(
        "lineage (newest first)",
        ["id", "status", "mean", "mutation", "formula"],
        [
            [
                str(a["id"]),
                a["status"],
                score(a["mean_score"]),
                a["mutation"] or "(initial)",
                a["formula"] or "-",
            ]
            for a in r["lineage"]
        ],
    )
