"""Options that several commands share, and how commands open the results database."""

from __future__ import annotations

from typing import Any

import click

FORMATS = click.Choice(["table", "json"])


def db_option(function: Any) -> Any:
    return click.option(
        "--db",
        "db_url",
        default=None,
        metavar="URL",
        help="Results database (default: $EVONORM_DB, else sqlite:///evonorm.db).",
    )(function)


def runner_options(function: Any) -> Any:
    """``--workers``, ``--gpus-per-trial`` and ``--address`` of the stages after a search."""
    for option in reversed(
        [
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                default=1,
                show_default=True,
                help="Concurrent runs.",
            ),
            click.option(
                "--gpus-per-trial", type=click.FloatRange(min=0.0), default=0.0, show_default=True
            ),
            click.option(
                "--address", default=None, help="Join this Ray cluster (trusted networks only)."
            ),
        ]
    ):
        function = option(function)
    return function


def open_store(db_url: str | None) -> Any:
    """A read-only store: queries never create, migrate or write a database."""
    from evonorm_search.store import Store

    return Store(db_url, readonly=True)


def writable_store(db_url: str | None) -> Any:
    from evonorm_search.store import Store

    return Store(db_url)
