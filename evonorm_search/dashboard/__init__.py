"""A read-only web dashboard over the results store: the searches, a search's live
progress, funnel and Pareto front, and each candidate with its graph, scores and lineage.

    evonorm-search dashboard --db sqlite:///evonorm.db      # http://127.0.0.1:8080/

Starlette serves Jinja2 pages, their script and plotly.js (a copy in static/: no CDN);
``/api/...`` serves the same JSON as the CLI's ``--format json``.  Importing this package
imports Starlette; the rest of evonorm-search never does.

It answers only requests addressed to a host it serves (the ``Host`` header, any port):
127.0.0.1, localhost and [::1], the ``--host`` it listens on and the address that
resolved to, and each ``--allow-host`` name (a reverse proxy's public name, say); any other
gets a 400.  A web page that rebinds its DNS name to this machine (DNS rebinding) thus
cannot read the database from a user's browser: its requests name its own host.  On
0.0.0.0 or :: (every interface) the machine's own names and addresses are not knowable in
general, so only the loopback names and ``--allow-host`` are answered, and the start-up
warning says to pass ``--allow-host`` for each name or address clients use.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Sequence

from evonorm_search.dashboard.app import LOOPBACK_HOSTS, create_app
from evonorm_search.errors import EvoNormError

__all__ = ["create_app", "host_names", "serve"]

# A DNS name as TrustedHostMiddleware matches it; "*.example.com": its subdomains.
_NAME = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def serve(
    db_url: str | None, host: str = "127.0.0.1", port: int = 8080, allow_hosts: Sequence[str] = ()
) -> None:
    """Open the store read-only (a database that cannot be used raises a one-line
    StoreError before anything listens), bind ``host:port`` (0: any free port) and serve
    until interrupted, answering the hosts the module's docstring lists (``allow_hosts``
    added; a name that is not one raises EvoNormError before anything else)."""
    import uvicorn

    from evonorm_search.store import Store

    extra = [_allowed_name(name) for name in allow_hosts]
    with Store(db_url, readonly=True) as store:
        listener = _bind(host, port)
        bound_host, bound_port = listener.getsockname()[:2]
        hosts = host_names(host, bound_host, extra)
        app = create_app(store, allowed_hosts=hosts)
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        print(
            f"evonorm-search dashboard: http://{shown}:{bound_port}/ (read-only; Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
        if not _is_loopback(host):
            print(
                f"evonorm-search: warning: listening on {host}: anyone who can reach this "
                "machine can read every search in the database (the dashboard has no "
                f"authentication); it answers only requests addressed to {', '.join(hosts)} "
                "(pass --allow-host for each other name or address clients use)",
                file=sys.stderr,
                flush=True,
            )
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[listener])


def host_names(host: str, bound_host: str, allow_hosts: Sequence[str] = ()) -> list[str]:
    """The Host names the dashboard answers when it listens on ``host`` (as given), bound
    to the address ``bound_host``: the loopback ones, ``host`` and ``bound_host`` unless they
    mean every interface, and ``allow_hosts`` (as ``_allowed_name`` leaves them)."""
    names = list(LOOPBACK_HOSTS)
    if not (_is_any(host) or _is_any(bound_host)):
        names += [_host_name(host), _host_name(bound_host)]
    names += allow_hosts
    return list(dict.fromkeys(names))


def _host_name(name: str) -> str:
    """``name`` as a Host header carries it: lower case, an IPv6 address compressed and in
    brackets (as browsers write it)."""
    name = name.strip().lower()
    try:
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return name
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def _allowed_name(name: str) -> str:
    """An ``--allow-host`` value as a Host name, or EvoNormError saying what is wrong."""
    host = _host_name(name)
    if host.startswith("[") or _NAME.fullmatch(host):
        return host
    raise EvoNormError(
        f"--allow-host {name!r} is not a host name or address: give it without scheme, port "
        "or path ('*.example.com' allows its subdomains; '*', any host, is not allowed)"
    )


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except (OSError, UnicodeError) as e:
        raise EvoNormError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_any(host: str) -> bool:
    """Whether ``host`` means every interface (0.0.0.0, ::, or empty)."""
    if not host.strip():
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
