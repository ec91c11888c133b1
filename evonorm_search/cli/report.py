"""``report``: a search's report as HTML or Markdown."""

from __future__ import annotations

from pathlib import Path

import click

from evonorm_search.cli import options
from evonorm_search.cli.options import COUNT, LibraryDefault, open_store


@click.command()
@click.argument("name")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="report.html (figures inlined) or report.md (figures beside it).",
)
@click.option(
    "--top",
    type=COUNT,
    default=LibraryDefault("evonorm_search.report:write_report", "top"),
    show_default=True,
    help="Layers drawn and compared.",
)
@options.db
def report(name: str, output: Path, top: int, db_url: str | None) -> None:
    """Write the report of the search NAME: settings, funnel, Pareto front, top layers."""
    from evonorm_search.report import write_report

    with open_store(db_url) as store:
        write_report(store, name, output, top=top)
    click.echo(f"wrote {output}")
