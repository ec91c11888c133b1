"""``dashboard``: the read-only web dashboard over the results database."""

from __future__ import annotations

import click

from evonorm_search.cli import options
from evonorm_search.cli.options import LibraryDefault


@click.command()
@options.db
@click.option(
    "--host",
    type=str,
    default=LibraryDefault("evonorm_search.dashboard:serve", "host"),
    show_default=True,
    help="Address to listen on; anything but loopback shows every search to the "
    "network (no authentication).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=LibraryDefault("evonorm_search.dashboard:serve", "port"),
    show_default=True,
    help="Port to listen on (0: any free one, printed).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    metavar="NAME",
    multiple=True,
    help="Also answer requests addressed to NAME (repeatable): a reverse proxy's "
    "public name, or this machine's names and addresses with --host 0.0.0.0 or ::; "
    "'*.example.com' allows its subdomains. Requests for any host but these, "
    "127.0.0.1, localhost and --host get 400 (against DNS rebinding).",
)
def dashboard(db_url: str | None, host: str, port: int, allow_hosts: tuple[str, ...]) -> None:
    """Serve a read-only web dashboard over the database: searches, live progress, the
    Pareto front, candidates (JSON under /api)."""
    from evonorm_search.dashboard import serve

    serve(db_url, host, port, allow_hosts=allow_hosts)
