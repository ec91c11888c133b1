"""The dashboard's Starlette application: three pages and the JSON endpoints behind them.

The pages are skeletons that their script fills from the JSON endpoints and polls while a
search runs, so that what the browser shows is what ``/api`` serves, and that is what the
CLI prints with ``--format json`` (the same store queries).  Every read goes through a
read-only ``Store``: the dashboard never creates, migrates or writes a database, and
SQLite's WAL mode lets it read while a search writes.

Every response carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and a
Content-Security-Policy that lets a page run and style itself only from the dashboard's
own files (no inline script or style, no ``eval``, no framing): see ``CSP``.  Requests
whose ``Host`` header names anything but ``allowed_hosts`` get a 400 (Starlette's
``TrustedHostMiddleware``), so a web page that rebinds its DNS name to this machine
cannot read the database from a user's browser.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evonorm_search.errors import EvoNormError, NotFoundError, StoreError
from evonorm_search.store import BASELINE_STRATEGY, Store, pareto_json

__all__ = ["CSP", "LOOPBACK_HOSTS", "SVG_CSP", "create_app"]

HERE = Path(__file__).parent
# How often the pages ask for news while a search runs (the browser tests wait for it).
POLL_MS = 2000
# static/plotly-basic.min.js is plotly.js's official "basic" partial bundle (scatter, bar,
# pie; MIT), from npm's plotly.js-basic-dist-min 4.1.1: a quarter of the full bundle's size,
# it compiles in about 0.3 s instead of 1.3 s on a first visit (benchmarks/dashboard.py).
# Its stylesheet is static/plotly.css, which the search page links as plotly.js asks for
# under a strict CSP (see that file): otherwise plotly.js injects a <style> element.

# The Host names (Host headers without their port) answered by default: the loopback ones.
# An IP literal cannot be rebound, and no other site can make a browser send "localhost".
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Scripts, styles, images, fonts and fetches from the dashboard itself only: no inline
# script or style (element or attribute), no eval, no plugin, no <base>, no form posting,
# no framing.  data: and blob: images: plotly.js's "download plot as png" draws the plot's
# SVG through a blob: URL (a data: one in Safari).
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
# The graph drawing (graph.svg, matplotlib's SVG) styles itself with a <style> element and
# style attributes, so opened on its own it needs inline styles; it gets no script at all,
# loads nothing (default-src 'none': no url() either) and is sandboxed.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def create_app(store: Store, *, allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> ASGIApp:
    """The dashboard over ``store`` (opened read-only by the caller, closed by it too),
    answering requests whose ``Host`` header (without its port, case-insensitively) is one
    of ``allowed_hosts`` and a 400 "Invalid host header" to any other.  An IPv6 address
    goes in brackets as in a URL (``"[::1]"``); ``"*.example.com"`` allows the subdomains
    of example.com; a bare ``"*"`` (any host) is refused."""
    hosts = [name.lower() for name in allowed_hosts]
    if "*" in hosts:
        raise ValueError("allowed_hosts '*' would answer any Host (DNS rebinding): name them")
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
    )

    def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(template).render(poll_ms=POLL_MS, **context)
        return HTMLResponse(html, status_code=status_code)

    async def read(function: Any, *args: Any) -> Any:
        """A store query in a worker thread (queries are blocking), errors as HTTP ones."""
        try:
            return await run_in_threadpool(function, *args)
        except NotFoundError as e:
            raise HTTPException(404, str(e)) from None
        except StoreError as e:
            # The database went away or is locked (say so, keep serving), or a bad query.
            unavailable = isinstance(e.__cause__, sqlalchemy.exc.DBAPIError)
            raise HTTPException(503 if unavailable else 400, str(e)) from None
        except EvoNormError as e:
            raise HTTPException(400, str(e)) from None

    def candidate_id(request: Request) -> int:
        text = request.path_params["candidate_id"]
        if not text.isdigit() or len(text) > 18:
            raise HTTPException(404, f"unknown candidate id {text}")
        return int(text)

    # -- pages -------------------------------------------------------------------------

    async def searches_page(request: Request) -> Response:
        return page("searches.html")

    async def search_page(request: Request) -> Response:
        search = await read(store.search, request.path_params["name"])
        return page("search.html", search=search)

    async def candidate_page(request: Request) -> Response:
        record = await read(store.candidate, candidate_id(request))
        return page("candidate.html", candidate=record)

    # -- JSON --------------------------------------------------------------------------

    async def api_searches(request: Request) -> Response:
        return JSONResponse(await read(store.searches))

    async def api_search(request: Request) -> Response:
        name = request.path_params["name"]
        info = await read(store.status, name)
        return JSONResponse({**info, "funnel": await read(store.funnel, name)})

    async def api_pareto(request: Request) -> Response:
        name = request.path_params["name"]
        chosen = request.query_params.get("objectives")
        objectives = [o.strip() for o in chosen.split(",")] if chosen else None
        front = await read(store.pareto, name, objectives)
        with_baselines = request.query_params.get("baselines", "0") not in ("0", "", "false")
        zoo = await read(store.baseline_layers, name, objectives) if with_baselines else None
        return JSONResponse(pareto_json(front, zoo))

    async def api_siblings(request: Request) -> Response:
        """The best-so-far curves of the other searches on the search's space, as
        [trained count, best mean so far] where the best changed (and the last)."""
        name = request.path_params["name"]
        space = (await read(store.search, name))["space"]
        others = [
            s["name"]
            for s in await read(store.searches)
            if s["space"] == space and s["name"] != name and s["strategy"] != BASELINE_STRATEGY
        ]
        siblings = []
        for other in others:
            curve = await read(store.best_so_far, other)
            steps = [
                [n, best]
                for i, (n, _, _, best) in enumerate(curve)
                if i == 0 or i == len(curve) - 1 or best != curve[i - 1][3]
            ]
            siblings.append({"name": other, "curve": steps})
        return JSONResponse(siblings)

    async def api_points(request: Request) -> Response:
        """Every trained candidate in birth order (the front plot's cloud, and the
        best-so-far curve the page draws from it)."""
        return JSONResponse(await read(store.trained_points, request.path_params["name"]))

    async def api_baselines(request: Request) -> Response:
        return JSONResponse(
            pareto_json([], await read(store.baseline_layers, request.path_params["name"]))[
                "baselines"
            ]
        )

    async def api_transfer(request: Request) -> Response:
        """The search's transfer as stored (``search.transfer.stored_transfer``; null
        when nothing was transferred)."""
        from evonorm_search.search.transfer import stored_transfer

        return JSONResponse(await read(stored_transfer, store, request.path_params["name"]))

    async def api_candidate(request: Request) -> Response:
        return JSONResponse(await read(store.candidate, candidate_id(request)))

    # -- downloads ---------------------------------------------------------------------

    async def graph_json(request: Request) -> Response:
        cid = candidate_id(request)
        record = await read(store.candidate, cid)
        return Response(
            record["graph"],
            media_type="application/json",
            headers=_attachment(f"candidate-{cid}.json"),
        )

    async def graph_svg(request: Request) -> Response:
        record = await read(store.candidate, candidate_id(request))
        svg = await run_in_threadpool(_graph_svg, record["graph"])
        if svg is None:
            raise HTTPException(404, f"candidate {record['id']} holds no valid layer to draw")
        return Response(
            svg, media_type="image/svg+xml", headers={"Content-Security-Policy": SVG_CSP}
        )

    async def layer_py(request: Request) -> Response:
        from evonorm_search.export import export_source, provenance_of

        cid = candidate_id(request)
        record = await read(store.candidate, cid)
        try:
            source = export_source(
                record["graph"], "EvolvedNormAct", provenance=provenance_of(record)
            )
        except EvoNormError as e:
            raise HTTPException(404, f"candidate {cid} cannot be exported: {e}") from None
        return Response(
            source, media_type="text/x-python", headers=_attachment(f"evolved_norm_act_{cid}.py")
        )

    async def error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": detail}, status_code=status)
        return page("error.html", status_code=status, status=status, detail=detail)

    routes = [
        Route("/", searches_page),
        Route("/searches/{name}", search_page),
        Route("/candidates/{candidate_id}", candidate_page),
        Route("/candidates/{candidate_id}/graph.json", graph_json),
        Route("/candidates/{candidate_id}/graph.svg", graph_svg),
        Route("/candidates/{candidate_id}/layer.py", layer_py),
        Route("/api/searches", api_searches),
        Route("/api/searches/{name}", api_search),
        Route("/api/searches/{name}/pareto", api_pareto),
        Route("/api/searches/{name}/siblings", api_siblings),
        Route("/api/searches/{name}/points", api_points),
        Route("/api/searches/{name}/baselines", api_baselines),
        Route("/api/searches/{name}/transfer", api_transfer),
        Route("/api/candidates/{candidate_id}", api_candidate),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: error, Exception: error},
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)],
    )
    # Outside Starlette's own error middleware, so that its 500s carry the headers too.
    return _SecurityHeaders(app)


class _SecurityHeaders:
    """Pure ASGI middleware: ``SECURITY_HEADERS`` on every HTTP response, a response's own
    Content-Security-Policy (the SVG drawing's) kept."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


@functools.lru_cache(maxsize=256)
def _graph_svg(graph_json: str) -> bytes | None:
    """The drawing of a stored graph (None where it is not a valid layer); a graph never
    changes, so drawings are kept."""
    from evonorm_search.graph import LayerGraph
    from evonorm_search.plots import graph_figure

    try:
        graph = LayerGraph.from_json(graph_json).validate()
    except EvoNormError:
        return None
    buffer = io.BytesIO()
    graph_figure(graph, title=" ").savefig(buffer, format="svg")
    return buffer.getvalue()
