"""The store's reads, for the CLI, the dashboard and the driver: each opens one read
session and returns plain data (most through :mod:`evonorm_search.store.queries`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from evonorm_search.store import queries
from evonorm_search.store.models import (
    NAMED,
    Candidate,
)


class StoreReads:
    """``Store``'s read methods (a mixin: it needs ``_read()``, a read session)."""

    def searches(self) -> list[dict[str, Any]]:
        with self._read() as session:
            return queries.searches(session)

    def search(self, name: str) -> dict[str, Any]:
        with self._read() as session:
            return queries.search_dict(queries.get_search(session, name))

    def status(self, name: str) -> dict[str, Any]:
        with self._read() as session:
            return queries.status(session, name)

    def funnel(self, name: str) -> list[dict[str, Any]]:
        with self._read() as session:
            return queries.funnel(session, name)

    def pareto(
        self, name: str, objectives: Sequence[str] | None = None, *, recompute: bool = False
    ) -> list[dict[str, Any]]:
        with self._read() as session:
            return queries.pareto(session, name, objectives, recompute=recompute)

    def best_so_far(self, name: str) -> list[list[Any]]:
        """The search's best-so-far curve (see ``queries.best_so_far``)."""
        with self._read() as session:
            return queries.best_so_far(session, name)

    def baseline_layers(
        self, name: str, objectives: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The zoo's layers evaluated on the search ``name``'s protocol (see
        ``queries.baseline_layers``)."""
        with self._read() as session:
            return queries.baseline_layers(session, name, objectives)

    def retune_results(self, name: str) -> list[dict[str, Any]]:
        """The retuned layers of search ``name``, best mean first (see
        ``queries.retune_results``)."""
        with self._read() as session:
            return queries.retune_results(session, name)

    def candidate(self, candidate_id: int) -> dict[str, Any]:
        with self._read() as session:
            return queries.candidate(session, candidate_id)

    def lineage(self, candidate_id: int) -> list[dict[str, Any]]:
        with self._read() as session:
            return queries.lineage(session, candidate_id)

    def top(self, name: str, k: int = 10, by: str = "mean") -> list[dict[str, Any]]:
        with self._read() as session:
            return queries.top(session, name, k, by)

    def trained_points(self, name: str) -> list[dict[str, Any]]:
        """Every trained candidate's id, formula, scores and costs, in birth order (for
        plots)."""
        with self._read() as session:
            search_id = queries.get_search(session, name).id
            rows = session.execute(
                sa.select(
                    Candidate.id,
                    Candidate.formula,
                    queries.SCORES_TEXT,
                    Candidate.mean_score,
                    Candidate.bytes_per_element,
                    Candidate.node_count,
                    Candidate.on_front,
                )
                .where(Candidate.search_id == search_id, Candidate.status == "trained")
                .order_by(Candidate.id)
            )
            return [
                {
                    "id": cid,
                    "formula": formula,
                    "scores": queries.load_scores(scores),
                    "mean_score": mean,
                    "bytes_per_element": cost,
                    "node_count": nodes,
                    "on_front": on_front,
                }
                for cid, formula, scores, mean, cost, nodes, on_front in rows
            ]

    def history(self, name: str, *, named: bool = False) -> list[dict[str, Any]]:
        """Every candidate of a search's funnel in birth order, as a resumed search replays
        them: id, graph JSON (None where it never parsed), status, stage, parent, mutation,
        functional hash and scores; with ``named`` also the layers named for transfer."""
        with self._read() as session:
            search_id = queries.get_search(session, name).id
            where = [Candidate.search_id == search_id]
            if not named:
                where.append(Candidate.status != NAMED)
            rows = session.execute(
                sa.select(
                    Candidate.id,
                    Candidate.graph,
                    Candidate.formula,
                    Candidate.status,
                    Candidate.stage,
                    Candidate.parent_id,
                    Candidate.mutation,
                    Candidate.functional_hash,
                    Candidate.scores,
                )
                .where(*where)
                .order_by(Candidate.birth)
            )
            return [
                {
                    "id": i,
                    "graph": graph if formula is not None else None,
                    "status": status,
                    "stage": stage,
                    "parent": parent,
                    "mutation": mutation,
                    "functional_hash": fh,
                    "scores": scores,
                }
                for i, graph, formula, status, stage, parent, mutation, fh, scores in rows
            ]

    def structural_hashes(self, name: str) -> set[str]:
        """Every canonical form a search has seen (the funnel's ``seen`` on resume)."""
        with self._read() as session:
            search_id = queries.get_search(session, name).id
            return set(
                session.scalars(
                    sa.select(Candidate.structural_hash).where(
                        Candidate.search_id == search_id,
                        Candidate.status != NAMED,
                        Candidate.structural_hash.is_not(None),
                    )
                )
            )
