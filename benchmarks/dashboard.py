"""Dashboard: how long a search of 10,000 candidates takes to open in a browser.

    python benchmarks/dashboard.py [--candidates 10000] [--trained-share 0.3] [--repeat 5]
        [--db sqlite:///benchmarks/results/dashboard.db] [--rebuild] [--batch 500]
        [--chromium /usr/bin/chromium]

The database holds one search on evonorm_b, written through the store's public API as the
search driver writes it (``create_search``, ``add_candidate``, ``add_evaluation``,
``update_candidate`` with compile figures, ``set_fitness``), ``--batch`` candidates per
transaction.  The graphs are real: random layers of the space and mutations of them, with
their formula, hashes, node count and parent (an aging evolution: a tournament picks the
parent among the 32 youngest trained candidates, so a late candidate has a long lineage).
The funnel does not run (screening 10,000 candidates takes minutes): fates are drawn with
a seeded generator.  ``--trained-share`` of the candidates are trained, with scores that
drift from their parent's per architecture; the rest stop as structural duplicates (where
a mutation repeats a structure), FEC hits, at the numeric or stability stage, in the
compile stage, at the quality checkpoint or as failed trials.  ``--trained-share 1`` trains
every candidate: the worst case for the scatter.  The database is rebuilt with
``--rebuild``, or when it lacks this search (a SQLite file then holds only this search, so
the search page's comparison with other searches on the space costs nothing extra).

The real dashboard (``python -m evonorm_search dashboard --port 0``) then serves it to
Debian's Chromium, driven by Playwright, for three pages: the searches list, the search
page and the page of the trained candidate with the longest lineage.  An open is timed from
``page.goto`` until the page is drawn and one more frame has passed (so the frame showing
it was rendered): the searches table has rows; the funnel table has rows, the best-so-far
plot and the front plot are drawn; the candidate's lineage and scores are filled.  "cold":
the first open in a fresh browser context (empty cache, new renderer: plotly.min.js is
downloaded, parsed and compiled), ``--repeat`` contexts, median; "warm": ``--repeat`` more
opens in the same tab of the last context (plotly.min.js from the HTTP cache, its compiled
code kept by the renderer), median and max.

Baselines, measured in the same run: the JSON endpoints each page fetches, one after the
other with urllib from the running server ("API", median of ``--repeat``), and the same
store queries in this process ("store").  Last, instrumented opens of each page (a cold
one, then two warm ones in the same tab, the last described) show where the time goes:
the HTML and API requests as the browser saw them, when plotly.js had been evaluated, each
``Plotly.react`` (synchronous part and until its promise settled), and the main thread's
long tasks (over 50 ms).
Exit status 0 whatever the figures; 2 when Playwright or Chromium is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
ARCHITECTURES = ("resnet", "mobilenet", "efficientnet")
POPULATION, TOURNAMENT = 32, 8
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LIMIT_S = 1.0  # the acceptance line: a page opens in under a second

# Each page's "drawn" condition, as a JavaScript expression.
DRAWN = {
    "searches": "document.querySelector('#searches tbody tr') !== null",
    "search": "document.getElementById('front-plot').dataset.frontIds !== undefined"
    " && document.querySelector('#funnel tbody tr') !== null"
    " && document.querySelector('#curve-plot .scatterlayer') !== null",
    "candidate": "document.querySelector('#lineage li') !== null"
    " && document.querySelector('#scores tbody tr') !== null",
}
# Polled on every animation frame: true one frame after the page was first drawn (that
# frame has been rendered by then); the in-page clock of both moments is kept.
READY = """() => {
  if (!(%s)) return false;
  if (window.__drawnAt === undefined) { window.__drawnAt = performance.now(); return false; }
  if (window.__shownAt === undefined) window.__shownAt = performance.now();
  return true;
}"""
# The instrumented open: when plotly.js has been evaluated (it ends with `window.Plotly =
# Plotly`) and how long each Plotly.react takes.
INSTRUMENT = """(() => {
  const bench = window.__bench = { react: [], longTasks: [] };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) bench.longTasks.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: true });
  let plotly;
  Object.defineProperty(window, "Plotly", { configurable: true, enumerable: true,
    get() { return plotly; },
    set(value) {
      bench.plotlyReady = performance.now();
      const react = value.react;
      value.react = function (...args) {
        const entry = { id: typeof args[0] === "string" ? args[0] : args[0].id,
                        points: (args[1] || []).reduce((n, t) => n + (t.x ? t.x.length : 0), 0),
                        start: performance.now() };
        const result = react.apply(this, args);
        entry.sync = performance.now();
        bench.react.push(entry);
        Promise.resolve(result).then(() => { entry.end = performance.now(); });
        return result;
      };
      plotly = value;
    } });
})();"""
TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const path = (u) => { const url = new URL(u); return url.pathname + url.search; };
  return {
    nav: { responseStart: nav.responseStart, responseEnd: nav.responseEnd,
           domInteractive: nav.domInteractive, dcl: nav.domContentLoadedEventEnd,
           load: nav.loadEventEnd },
    resources: performance.getEntriesByType("resource").map((r) => ({ path: path(r.name),
      start: r.startTime, requestStart: r.requestStart, responseStart: r.responseStart,
      end: r.responseEnd, bytes: r.encodedBodySize, cached: r.transferSize === 0 })),
    bench: window.__bench || null, drawn: window.__drawnAt, shown: window.__shownAt,
    nodes: document.getElementsByTagName("*").length,
  };
}"""


# -- the database ----------------------------------------------------------------------------


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


# What stops a candidate that is not trained and is no structural duplicate, and how often.
OTHER_FATES = {
    "functional": 0.18,
    "numeric": 0.30,
    "stability": 0.22,
    "compile": 0.12,
    "quality": 0.15,
    "diverged": 0.03,
}
NUMERIC = {
    "non_finite": {"spread": None, "scale": None},
    "constant_output": {"spread": 3e-6, "scale": 1e-5},
    "exploding_output": {"spread": 1.2, "scale": 4.2e5},
}


class Writer:
    """Writes a search's candidates as the driver would, remembering what evolution needs."""

    def __init__(self, store: Any, name: str, share: float, seed: int) -> None:
        from evonorm_search.space import load_space

        self.store, self.name, self.share = store, name, share
        self.space = load_space("evonorm_b")
        self.rng = np.random.default_rng(seed)
        # Aging evolution over the trained candidates: (id, graph, latent fitness per
        # architecture, accuracies).
        self.population: deque[tuple[int, Any, np.ndarray, np.ndarray]] = deque(maxlen=POPULATION)
        self.trained: list[tuple[int, str]] = []  # (id, functional hash): FEC twins
        self.seen: set[str] = set()
        self.fates = list(OTHER_FATES)
        self.weights = np.array(list(OTHER_FATES.values())) / sum(OTHER_FATES.values())

    def seconds(self, last: str) -> dict[str, float]:
        """Plausible seconds per screening stage, up to the one that stopped it."""
        typical = {
            "static": 0.0004,
            "duplicate": 0.0001,
            "functional": 0.006,
            "numeric": 0.0002,
            "stability": 0.02,
        }
        seconds = {}
        for stage, s in typical.items():
            seconds[stage] = round(s * float(self.rng.uniform(0.7, 1.5)), 5)
            if stage == last:
                break
        return seconds

    def propose(self, train: bool) -> tuple[Any, int | None, str | None, np.ndarray]:
        """A graph, its parent, the mutation and the graph's latent fitness (a random
        walk from its parent's, mostly downhill: a fresh random layer while the population
        fills)."""
        from evonorm_search.mutation import mutate, random_graph

        rng, k = self.rng, len(ARCHITECTURES)
        if len(self.population) < POPULATION:
            latent = rng.normal(-1.0, 0.7) + rng.normal(0, 0.2, k)
            return random_graph(self.space, rng), None, None, latent
        picks = rng.choice(len(self.population), TOURNAMENT, replace=False)
        parent, graph, latent, _ = max(
            (self.population[i] for i in picks), key=lambda p: p[3].mean()
        )
        for _ in range(20):  # a trained candidate gets a structure of its own where it can
            child, mutation = mutate(graph, self.space, rng)
            if not train or child.structural_hash() not in self.seen:
                break
        return child, parent, mutation, latent + rng.normal(-0.1, 0.15) + rng.normal(0, 0.08, k)

    def accuracies(self, latent: np.ndarray) -> np.ndarray:
        """Validation accuracies per architecture: 0.1 to 0.92, with noise of a seed."""
        noise = self.rng.normal(0, 0.01, len(latent))
        accuracy = 0.1 + 0.82 / (1 + np.exp(-latent)) + np.array([0.0, -0.03, -0.02]) + noise
        return np.clip(accuracy, 0.05, 0.99).round(4)

    def add(self) -> None:
        rng, store, name = self.rng, self.store, self.name
        train = bool(rng.random() < self.share)
        graph, parent, mutation, latent = self.propose(train)
        structure = graph.structural_hash()
        function = hashlib.sha256(f"f{structure}".encode()).hexdigest()
        common = {
            "graph": graph.to_json(),
            "formula": graph.formula(),
            "parent": parent,
            "mutation": mutation,
            "structural_hash": structure,
            "node_count": len(graph.pruned().nodes),
        }
        repeated = structure in self.seen
        self.seen.add(structure)
        fate = "trained"
        if not train:
            fate = (
                "duplicate" if repeated else self.fates[rng.choice(len(self.fates), p=self.weights)]
            )
        if fate == "functional" and not self.trained:
            fate = "numeric"
        if fate == "duplicate":
            store.add_candidate(
                name,
                **common,
                status="duplicate",
                stage="duplicate",
                reason="structural_duplicate",
                seconds=self.seconds("duplicate"),
                detail=f"canonical form {structure} seen before",
            )
            return
        if fate == "functional":
            twin, twin_hash = self.trained[int(rng.integers(len(self.trained)))]
            store.add_candidate(
                name,
                **common,
                functional_hash=twin_hash,
                status="duplicate",
                stage="functional",
                reason="functional_duplicate",
                detail=f"computes what candidate {twin} does",
                measured={"candidate": twin},
                duplicate_of=twin,
                seconds=self.seconds("functional"),
            )
            return
        if fate == "numeric":
            reason = list(NUMERIC)[int(rng.integers(len(NUMERIC)))]
            store.add_candidate(
                name,
                **common,
                functional_hash=function,
                status="rejected",
                stage="numeric",
                reason=reason,
                measured=NUMERIC[reason],
                detail=f"{reason.replace('_', ' ')} on the probe",
                seconds=self.seconds("numeric"),
            )
            return
        probe = {
            "spread": round(float(rng.uniform(0.05, 2.0)), 4),
            "scale": round(float(rng.uniform(0.3, 3.0)), 4),
        }
        if fate == "stability":
            ratio = float(10 ** rng.uniform(8.1, 11))
            store.add_candidate(
                name,
                **common,
                functional_hash=function,
                status="rejected",
                stage="stability",
                reason="unstable",
                detail=f"gradient/weight norm ratio {ratio:.3g} above 1e+08",
                measured={**probe, "max_ratio": ratio, "steps": 5},
                seconds=self.seconds("stability"),
            )
            return
        # Passed the screening: a trial runs the compile stage, then trains the proxies.
        probe.update(max_ratio=round(float(rng.uniform(1.0, 6.0)), 3), steps=5)
        cid = store.add_candidate(
            name,
            **common,
            functional_hash=function,
            status="running",
            stage="compile",
            measured=probe,
            seconds=self.seconds("stability"),
        )
        if fate == "compile":
            seconds = {"compile": round(float(rng.uniform(0.01, 0.05)), 3)}
            store.update_candidate(
                cid,
                status="rejected",
                stage="compile",
                seconds=seconds,
                reason="unsupported: a statistic of a statistic",
            )
            return
        quality = self.accuracies(latent)
        self.train(cid, fate, quality, structure)
        if fate == "trained":
            self.trained.append((cid, function))
            self.population.append((cid, graph, latent, quality))

    def train(self, cid: int, fate: str, quality: np.ndarray, structure: str) -> None:
        """The trial's records: compile figures, one evaluation per architecture run, and
        the fitness (or the architecture it stopped on)."""
        rng, store = self.rng, self.store
        fwd, bwd = int(rng.integers(2, 7)), int(rng.integers(3, 11))
        compiled = {
            "kernel_hash": hashlib.sha256(structure.encode()).hexdigest()[:16],
            "target": "sm_90a",
            "shape": [128, 64, 56, 56],
            "dtype": "bfloat16",
            "registers": int(rng.integers(24, 96)),
            "spill_bytes": 0,
            "compile_s": round(float(rng.uniform(0.8, 3.0)), 3),
            "traffic_fwd": fwd,
            "traffic_bwd": bwd,
            "kernels": int(rng.integers(1, 4)),
            "verified": True,
        }
        runs = len(ARCHITECTURES) if fate == "trained" else 1 + int(rng.integers(3))
        accuracy = 0.0
        for i, architecture in enumerate(ARCHITECTURES[:runs]):
            stopped = fate != "trained" and i == runs - 1
            accuracy = float(rng.uniform(0.08, 0.19)) if stopped else float(quality[i])
            diverged = stopped and fate == "diverged"
            store.add_evaluation(
                cid,
                architecture=architecture,
                dataset="cifar10",
                preset="tiny",
                seed=0,
                steps=100 if stopped else 300,
                status=("diverged" if diverged else "rejected") if stopped else "completed",
                seconds=round(float(rng.uniform(20, 40)) / (3 if stopped else 1), 2),
                accuracy=None if diverged else round(accuracy, 4),
                loss=None if diverged else round(2.3 * (1 - accuracy), 4),
                quality_accuracy=None if diverged else round(accuracy * 0.9, 4),
                node="bench-node",
            )
        seconds = {
            "compile": compiled["compile_s"],
            "proxy": round(float(rng.uniform(60, 120)) * runs / 3, 2),
        }
        figures = {"compiled": compiled, "bytes_per_element": fwd + bwd, "seconds": seconds}
        stopped_on = ARCHITECTURES[runs - 1]
        if fate == "quality":
            store.update_candidate(
                cid,
                status="rejected",
                stage="quality",
                **figures,
                reason=f"below the quality threshold on {stopped_on}: "
                f"{accuracy:.3f} < 0.2 at step 100",
            )
        elif fate == "diverged":
            store.update_candidate(
                cid,
                status="failed",
                stage="quality",
                **figures,
                reason=f"diverged on {stopped_on} at step 100",
            )
        else:
            store.update_candidate(cid, **figures)
            scores = zip(ARCHITECTURES, quality.tolist(), strict=True)
            store.set_fitness(cid, dict(scores))


def populate(url: str, name: str, n: int, share: float, batch: int, seed: int) -> float:
    """Write the search; returns the seconds it took."""
    from evonorm_search.store import Store

    start = time.perf_counter()
    with Store(url) as store:
        store.create_search(
            name,
            space="evonorm_b",
            strategy="evolution",
            seed=seed,
            budget=max(round(n * share), 1),
            architectures=ARCHITECTURES,
            proxy_key=f"bench-{name}",
            config={"benchmark": "benchmarks/dashboard.py"},
        )
        writer = Writer(store, name, share, seed)
        for first in range(0, n, batch):
            with store.batch():
                for _ in range(min(batch, n - first)):
                    writer.add()
            written = min(first + batch, n)
            if written % max(n // 5, 1) < batch or written == n:
                print(
                    f"    {written} candidates written, {time.perf_counter() - start:.1f} s",
                    flush=True,
                )
        store.set_search_status(name, "completed")
    return time.perf_counter() - start


def ensure_database(args: argparse.Namespace, name: str) -> float | None:
    """Reuse the database when it holds the search whole; else (re)build it.  Returns the
    seconds populating took, None when reused."""
    from evonorm_search.errors import EvoNormError
    from evonorm_search.store import Store

    path = sqlite_path(args.db)
    if not args.rebuild and (path is None or path.is_file()):
        try:
            with Store(args.db, readonly=True) as store:
                if store.status(name)["screened"] == args.candidates:
                    return None
        except EvoNormError:
            pass
    if path is None:
        sys.exit(
            f"{args.db}: only a SQLite database is built or rebuilt here; give a fresh SQLite path"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(
        f"populating {path}: {args.candidates} candidates, trained share {args.trained_share:g}",
        flush=True,
    )
    return populate(args.db, name, args.candidates, args.trained_share, args.batch, args.seed)


def longest_lineage(store: Any, name: str) -> tuple[int, int]:
    """The trained candidate with the most ancestors, and the length of its lineage."""
    depth: dict[int, int] = {}
    best = (0, -1)
    for c in store.history(name):
        depth[c["id"]] = depth.get(c["parent"], 0) + 1
        if c["status"] == "trained":
            best = max(best, (depth[c["id"]], c["id"]))
    return best[1], best[0]


# -- the baselines -----------------------------------------------------------------------------


def samples(function: Callable[[], Any], repeat: int) -> list[float]:
    """Seconds of ``repeat`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def store_calls(store: Any, name: str, candidate: int) -> dict[str, Callable[[], Any]]:
    """Per page, the store queries behind the JSON endpoints it fetches (the search page's
    default front is over its first two architectures)."""
    pair = list(ARCHITECTURES[:2])

    def search() -> None:
        store.status(name), store.funnel(name), store.trained_points(name)
        store.searches()  # /siblings: the other searches on the space
        store.pareto(name, pair), store.baseline_layers(name, pair)

    def candidate_page() -> None:
        store.baseline_layers(name), store.candidate(candidate)

    return {"searches": store.searches, "search": search, "candidate": candidate_page}


def api_paths(name: str, candidate: int) -> dict[str, list[str]]:
    """Per page, the JSON endpoints its script fetches."""
    api = f"/api/searches/{urllib.parse.quote(name, safe='')}"
    pair = urllib.parse.quote(",".join(ARCHITECTURES[:2]), safe="")
    return {
        "searches": ["/api/searches"],
        "search": [
            api,
            f"{api}/points",
            f"{api}/siblings",
            f"{api}/pareto?objectives={pair}&baselines=1",
        ],
        "candidate": [f"{api}/baselines", f"/api/candidates/{candidate}"],
    }


def fetch_all(base: str, paths: list[str]) -> int:
    size = 0
    for path in paths:
        with urllib.request.urlopen(base + path, timeout=120) as response:
            size += len(response.read())
    return size


@contextlib.contextmanager
def dashboard_server(url: str, log: Path) -> Iterator[str]:
    """The real dashboard CLI on a free port; yields its base URL."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "evonorm_search", "dashboard", "--db", url, "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            found = re.search(r"dashboard: (http://\S+?)/ ", log.read_text())
            if found:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the dashboard did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the browser -------------------------------------------------------------------------------


def open_page(page: Any, url: str, drawn: str) -> float:
    """Seconds from ``goto`` until the page is drawn and that frame rendered."""
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_function(READY % drawn, polling="raf", timeout=120_000)
    return time.perf_counter() - start


def browse(browser: Any, urls: dict[str, str], repeat: int) -> dict[str, dict[str, list]]:
    """Cold opens (each in a fresh context) and warm ones (again in the last context)."""
    # bypass_csp: wait_for_function evaluates its text with eval(), which the dashboard's
    # Content-Security-Policy refuses (the timed pages are the same either way).
    warmup = browser.new_context(bypass_csp=True)  # start the renderer machinery once, untimed
    open_page(warmup.new_page(), urls["searches"], DRAWN["searches"])
    warmup.close()
    figures = {}
    for key, url in urls.items():
        cold, warm = [], []
        for i in range(repeat):
            context = browser.new_context(bypass_csp=True)
            page = context.new_page()
            cold.append(open_page(page, url, DRAWN[key]))
            if i < repeat - 1:
                context.close()
        warm = [open_page(page, url, DRAWN[key]) for _ in range(repeat)]
        context.close()
        figures[key] = {"cold": cold, "warm": warm}
        print(
            f"    {key:<9} cold {' '.join(f'{t:.3f}' for t in cold)} s; "
            f"warm {' '.join(f'{t:.3f}' for t in warm)} s",
            flush=True,
        )
    return figures


def instrumented(page: Any, url: str, drawn: str) -> dict[str, Any]:
    """One open with plotly.js hooked and the main thread's long tasks recorded."""
    seconds = open_page(page, url, drawn)
    return {**page.evaluate(TIMINGS), "seconds": seconds}


def profile(browser: Any, urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per page: a cold open in a fresh context, then two more in the same tab, as the
    timed warm opens (the last one is described)."""
    result = {}
    for key, url in urls.items():
        context = browser.new_context(bypass_csp=True)
        context.add_init_script(INSTRUMENT)
        page = context.new_page()
        cold = instrumented(page, url, DRAWN[key])
        warm = [instrumented(page, url, DRAWN[key]) for _ in range(2)]
        result[key] = {"cold": cold, "warm": warm[-1]}
        context.close()
    return result


def describe(key: str, kind: str, t: dict[str, Any]) -> None:
    """Where one instrumented open spent its time (the in-page clock starts at the
    navigation)."""
    nav = t["nav"]
    print(
        f"  {key} page, {kind}: {t['seconds'] * 1e3:.0f} ms in all; drawn at "
        f"{t['drawn']:.0f} ms, that frame rendered at {t['shown']:.0f} ms; HTML at "
        f"{nav['responseEnd']:.0f} ms, DOMContentLoaded {nav['dcl']:.0f} ms; "
        f"{t['nodes']} elements"
    )
    for r in t["resources"]:
        size = f"{r['bytes'] / 1e6:.2f} MB" if r["bytes"] else "cached"
        wait = r["responseStart"] - r["requestStart"] if r["requestStart"] else 0.0
        print(
            f"    {r['path'][:60]:<60} {r['start']:6.0f} -> {r['end']:6.0f} ms "
            f"(server {wait:4.0f} ms) {size}"
        )
    bench = t["bench"] or {}
    if bench.get("plotlyReady") is not None:
        script = next((r for r in t["resources"] if r["path"].endswith("plotly.min.js")), None)
        begin = max(nav["domInteractive"], script["end"] if script else 0.0)
        ready = bench["plotlyReady"]
        print(
            f"    plotly.js evaluated at {ready:.0f} ms: about {ready - begin:.0f} ms after "
            "it could start (parse + run)"
        )
    for r in bench.get("react", []):
        end = f", {r['end'] - r['start']:.0f} ms until settled" if "end" in r else ""
        print(
            f"    Plotly.react #{r['id']} ({r['points']} points) at {r['start']:.0f} ms: "
            f"{r['sync'] - r['start']:.0f} ms synchronous{end}"
        )
    tasks = [(d, s) for s, d in bench.get("longTasks", []) if s < t["shown"]]
    if tasks:
        longest, at = max(tasks)
        print(
            f"    main thread: {len(tasks)} long tasks (over 50 ms) before it was shown, "
            f"{sum(d for d, _ in tasks):.0f} ms in all; the longest {longest:.0f} ms at "
            f"{at:.0f} ms"
        )


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument(
        "--trained-share",
        type=float,
        default=0.3,
        help="share of candidates trained (1: the worst case)",
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", default=f"sqlite:///{RESULTS / 'dashboard.db'}")
    parser.add_argument("--rebuild", action="store_true", help="write the database afresh")
    parser.add_argument("--batch", type=int, default=500, help="candidates per transaction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if not 0 <= args.trained_share <= 1 or args.candidates < 1 or args.repeat < 1:
        parser.error("--trained-share lies in [0, 1]; --candidates and --repeat are positive")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print(
            "benchmarks/dashboard.py: playwright is not installed (pip install playwright; "
            "it drives the system's Chromium)",
            file=sys.stderr,
        )
        sys.exit(2)
    if not Path(args.chromium).is_file():
        print(
            f"benchmarks/dashboard.py: no Chromium at {args.chromium} (apt-get install "
            "chromium, or --chromium PATH)",
            file=sys.stderr,
        )
        sys.exit(2)
    from evonorm_search.store import Store

    RESULTS.mkdir(exist_ok=True)
    name = f"bench-{args.candidates}-trained{args.trained_share:g}"
    populate_s = ensure_database(args, name)
    print(
        f"{name}: "
        + (
            f"populated in {populate_s:.1f} s"
            if populate_s is not None
            else f"reused from {args.db} (--rebuild writes it afresh)"
        )
    )

    with Store(args.db, readonly=True) as store:
        status = store.status(name)
        others = [s["name"] for s in store.searches() if s["name"] != name]
        candidate, generations = longest_lineage(store, name)
        print(
            f"{status['screened']} candidates, {status['trained']} trained, front "
            f"{status['front_size']}; candidate page: #{candidate} ({generations} in its "
            f"lineage)"
        )
        if others:
            print(f"note: the database holds {len(others)} other searches ({', '.join(others)})")
        calls = store_calls(store, name, candidate)
        store_s = {k: samples(f, args.repeat) for k, f in calls.items()}

    paths = api_paths(name, candidate)
    pages = {
        "searches": "/",
        "search": f"/searches/{urllib.parse.quote(name, safe='')}",
        "candidate": f"/candidates/{candidate}",
    }
    with dashboard_server(args.db, RESULTS / "dashboard-server.log") as base:
        print(f"dashboard at {base}; Chromium {args.chromium}", flush=True)
        api_s = {k: samples(lambda p=p: fetch_all(base, p), args.repeat) for k, p in paths.items()}
        api_bytes = {k: fetch_all(base, p) for k, p in paths.items()}
        urls = {k: base + path for k, path in pages.items()}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                print(
                    f"Chromium {browser.version}: {args.repeat} cold and {args.repeat} "
                    "warm opens per page",
                    flush=True,
                )
                opens = browse(browser, urls, args.repeat)
                breakdown = profile(browser, urls)
            finally:
                browser.close()

    print("\nwhere the time goes (per page: a cold open, then the second warm one in its tab)")
    for key in pages:
        for kind in ("cold", "warm"):
            describe(key, kind, breakdown[key][kind])

    print(
        f"\n{name}: cold = first open in a fresh browser context (median of {args.repeat}); "
        f"warm = {args.repeat} more opens in its tab (plotly.js cached and compiled).\n"
        "API = the page's JSON endpoints fetched one after the other with urllib (median); "
        "store = the same queries in-process; ratio = warm median / API."
    )
    print(
        f"{'page':<10} {'candidates':>10} {'trained':>8} {'cold open (s)':>13} "
        f"{'warm median (s)':>15} {'warm max (s)':>12} {'API (s)':>8} {'API MB':>7} "
        f"{'store (s)':>9} {'ratio':>6}"
    )
    worst = (0.0, "")
    for key in pages:
        cold, warm = opens[key]["cold"], opens[key]["warm"]
        api, local = statistics.median(api_s[key]), statistics.median(store_s[key])
        print(
            f"{key:<10} {status['screened']:>10} {status['trained']:>8} "
            f"{statistics.median(cold):>13.3f} {statistics.median(warm):>15.3f} "
            f"{max(warm):>12.3f} {api:>8.3f} {api_bytes[key] / 1e6:>7.2f} {local:>9.3f} "
            f"{statistics.median(warm) / api:>5.1f}x"
        )
        worst = max(worst, (max(cold + warm), key))
    verdict = "yes" if worst[0] < LIMIT_S else "no"
    print(
        f"every page opened under {LIMIT_S:g} s (all cold and warm opens): {verdict}; the "
        f"slowest open: {worst[1]} page, {worst[0]:.3f} s"
    )

    record = {
        "search": name,
        "db": args.db,
        "populate_s": populate_s,
        "status": status,
        "candidate": candidate,
        "lineage": generations,
        "opens": opens,
        "api_s": api_s,
        "api_bytes": api_bytes,
        "store_s": store_s,
        "profile": breakdown,
    }
    out = RESULTS / f"dashboard-{name}.json"
    out.write_text(json.dumps(record, indent=1, default=str))
    print(f"figures: {out}")


if __name__ == "__main__":
    main()
