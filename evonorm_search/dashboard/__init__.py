"""A read-only web dashboard over the results store: the searches, a search's live
progress, funnel and Pareto front, and each candidate with its graph, scores and lineage.

    evonorm-search dashboard --db sqlite:///evonorm.db      # http://127.0.0.1:8080/

Starlette serves Jinja2 pages, their script and plotly.js (a copy in static/: no CDN);
``/api/...`` serves the same JSON as the CLI's ``--format json``.  Importing this package
imports Starlette; the rest of evonorm-search never does.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from evonorm_search.dashboard.app import create_app
from evonorm_search.errors import EvoNormError

__all__ = ["create_app", "serve"]


def serve(db_url: str | None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Open the store read-only (a database that cannot be used raises a one-line
    StoreError before anything listens), bind ``host:port`` (0: any free port) and serve
    until interrupted."""
    import uvicorn

    from evonorm_search.store import Store

    with Store(db_url, readonly=True) as store:
        app = create_app(store)
        listener = _bind(host, port)
        bound_host, bound_port = listener.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        print(f"evonorm-search dashboard: http://{shown}:{bound_port}/ (read-only; Ctrl-C stops)",
              file=sys.stderr, flush=True)  # fmt: skip
        if not _is_loopback(host):
            print(f"evonorm-search: warning: listening on {host}: anyone who can reach this "
                  "machine can read every search in the database (the dashboard has no "
                  "authentication)", file=sys.stderr, flush=True)  # fmt: skip
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[listener])


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
