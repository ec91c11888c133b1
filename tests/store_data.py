"""A small but real search history for the store's tests: graphs from the mutation
operators, screened by the real funnel, with lineage; survivors get seeded random scores
(the store's logic is under test here, not training; test_store trains one for real)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evonorm_search.hashing import FunctionalCache, proxy_key
from evonorm_search.mutation import mutate, random_graph
from evonorm_search.rejection import Funnel
from evonorm_search.space import load_space
from evonorm_search.store import Store, StoreFEC


@dataclass
class History:
    """What the test wrote, to compare the store's answers with."""

    name: str
    architectures: tuple[str, ...]
    ids: list[int] = field(default_factory=list)
    parent: dict[int, int | None] = field(default_factory=dict)
    mutation: dict[int, str | None] = field(default_factory=dict)
    fate: dict[int, tuple[str, str | None, str | None]] = field(default_factory=dict)
    scores: dict[int, dict[str, float]] = field(default_factory=dict)
    nodes: dict[int, int | None] = field(default_factory=dict)


def populate(
    store: Store,
    name: str = "demo",
    *,
    candidates: int = 150,
    seed: int = 0,
    space_name: str = "evonorm_b",
    decimals: int | None = 2,
) -> History:
    """Run ``candidates`` graphs of a toy evolution through the funnel into ``store``.
    Scores are rounded to ``decimals`` so that ties (equal points) occur."""
    space = load_space(space_name)
    rng = np.random.default_rng(seed)
    store.create_search(
        name,
        space=space_name,
        strategy="evolution",
        seed=seed,
        budget=candidates,
        architectures=space.proxy.architectures,
        proxy_key=proxy_key(space),
        config={"space": space_name},
    )
    funnel = Funnel(space, cache=FunctionalCache(backend=StoreFEC(store)), stability=False)
    history = History(name, space.proxy.architectures)
    population: list[tuple[int, object]] = []
    for _ in range(candidates):
        if population and rng.random() < 0.7:
            parent, parent_graph = population[rng.integers(len(population))]
            graph, description = mutate(parent_graph, space, rng)
        else:
            parent, graph, description = None, random_graph(space, rng), None
        screening = funnel.screen(graph)
        cid = store.record_screening(name, screening, parent=parent, mutation=description)
        history.ids.append(cid)
        history.parent[cid], history.mutation[cid] = parent, description
        history.nodes[cid] = len(screening.graph.pruned().nodes)
        fate = screening.fate
        if screening.passed:
            scores = {a: float(rng.random()) for a in space.proxy.architectures}
            if decimals is not None:
                scores = {a: round(v, decimals) for a, v in scores.items()}
            store.set_fitness(cid, scores)
            funnel.release(screening.functional_hash)
            history.scores[cid] = scores
            history.fate[cid] = ("trained", "proxy", None)
            population.append((cid, screening.graph))
        else:
            status = "duplicate" if fate.stage in ("duplicate", "functional") else "rejected"
            history.fate[cid] = (status, fate.stage, fate.reason)
    return history


def brute_force_front(points: dict[int, list[float]]) -> set[int]:
    """Non-dominated ids by the definition, comparing every pair."""

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(
            x > y for x, y in zip(a, b, strict=True)
        )

    return {i for i, p in points.items() if not any(dominates(q, p) for q in points.values())}


def concurrent_writer(url: str, name: str, seconds: float, done, results) -> None:
    """Write candidates, each with three evaluations and its fitness (one transaction),
    for ``seconds``; report how many were committed."""
    import time

    from evonorm_search.store import Store

    rng = np.random.default_rng(1)
    committed = evaluations = 0
    try:
        with Store(url) as store:
            archs = store.search(name)["architectures"]
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                with store.batch():
                    cid = store.add_candidate(name, graph="x", formula="x", status="running")
                    for a in archs:
                        store.add_evaluation(
                            cid,
                            architecture=a,
                            dataset="synthetic",
                            preset="tiny",
                            seed=0,
                            steps=10,
                            status="completed",
                            seconds=0.1,
                            accuracy=float(rng.random()),
                        )
                    store.set_fitness(cid, {a: float(rng.random()) for a in archs})
                committed += 1
                evaluations += len(archs)
        results.put(("writer", committed, evaluations, []))
    except Exception as e:  # reported, not raised: the test asserts there were none
        results.put(("writer", committed, evaluations, [repr(e)]))
    finally:
        done.set()


def concurrent_reader(url: str, name: str, done, results) -> None:
    """Query the front and the status until the writer is done; report errors."""
    from evonorm_search.store import Store

    queries, errors = 0, []
    with Store(url, readonly=True) as store:
        while not done.is_set():
            try:
                status = store.status(name)
                front = store.pareto(name)  # read later: never emptier than status says
                if status["trained"] and not front:
                    errors.append("empty front although candidates are trained")
                if any(r["scores"] is None for r in front):
                    errors.append("a front member without scores")
                queries += 1
            except Exception as e:
                errors.append(repr(e))
    results.put(("reader", queries, 0, errors[:5]))
