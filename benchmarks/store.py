"""Results store: insert rate and Pareto-query latency at 10,000 and 100,000 candidates.

    python benchmarks/store.py [--sizes 10000 100000] [--backends sqlite postgresql]
                               [--postgres postgresql://postgres@127.0.0.1:5432/test]

Every candidate goes through the store's public write path as the search driver writes a
trained one: the candidate row, three evaluations and its fitness (which maintains the
front), ``--batch`` candidates per transaction.  All are trained (the worst case for the
front).  Queries are timed on a reader opened read-only: the maintained front (an indexed
read), against the baseline of recomputing it from every trained candidate's scores in the
same process, and the same recomputation over other objectives (mean accuracy, nodes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from evonorm_search.store import Store, make_engine

ARCHITECTURES = ("resnet", "mobilenet", "efficientnet")


def fresh_postgres(admin_url: str) -> tuple[str, callable]:
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"evonorm_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.engine.dispose()

    return sa.make_url(admin_url).set(database=name).render_as_string(False), drop


def fill(store: Store, n: int, batch: int, rng: np.random.Generator) -> float:
    """Insert ``n`` trained candidates; returns candidates per second."""
    store.create_search(
        "bench",
        space="evonorm_b",
        strategy="random",
        seed=0,
        budget=n,
        architectures=ARCHITECTURES,
        proxy_key="bench",
    )
    start = time.perf_counter()
    for first in range(0, n, batch):
        with store.batch():
            for _ in range(min(batch, n - first)):
                scores = dict(zip(ARCHITECTURES, rng.random(3).round(4), strict=True))
                cid = store.add_candidate(
                    "bench",
                    graph="{}",
                    formula="x",
                    status="running",
                    node_count=int(rng.integers(1, 11)),
                )
                for a, accuracy in scores.items():
                    store.add_evaluation(
                        cid,
                        architecture=a,
                        dataset="cifar10",
                        preset="tiny",
                        seed=0,
                        steps=400,
                        status="completed",
                        seconds=30.0,
                        accuracy=accuracy,
                    )
                store.set_fitness(cid, scores)
        if first and first % (n // 10) == 0:
            print(f"    {first} inserted", flush=True)
    return n / (time.perf_counter() - start)


def timed(function, repeats: int = 7) -> float:
    """Median seconds of ``function()`` after one warm-up call."""
    function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--batch", type=int, default=100, help="candidates per transaction")
    args = parser.parse_args()
    header = (
        f"{'backend':<11} {'candidates':>10} {'insert/s':>9} {'front':>6} "
        f"{'front ms':>9} {'recompute ms':>13} {'ratio':>6} {'mean,nodes ms':>14}"
    )
    for backend in args.backends:
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                if backend == "sqlite":
                    url, cleanup = f"sqlite:///{Path(tmp) / 'bench.db'}", (lambda: None)
                else:
                    url, cleanup = fresh_postgres(args.postgres)
                try:
                    print(f"{backend}: inserting {n} candidates", flush=True)
                    with Store(url) as store:
                        rate = fill(store, n, args.batch, np.random.default_rng(0))
                    with Store(url, readonly=True) as reader:
                        front = len(reader.pareto("bench"))
                        maintained = timed(lambda r=reader: r.pareto("bench"))
                        recomputed = timed(lambda r=reader: r.pareto("bench", recompute=True), 3)
                        other = timed(lambda r=reader: r.pareto("bench", ["mean", "nodes"]), 3)
                finally:
                    cleanup()
            print(header)  # each row as soon as it is measured: a long run keeps what it has
            print(
                f"{backend:<11} {n:>10} {rate:>9.0f} {front:>6} {maintained * 1e3:>9.1f} "
                f"{recomputed * 1e3:>13.1f} {recomputed / maintained:>5.0f}x "
                f"{other * 1e3:>14.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
