"""The functional-equivalence cache kept in the store: the first trained twin's fitness, per
functional hash and proxy, shared by every search of the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from evonorm_search.hashing import CachedFitness, FECBackend
from evonorm_search.store.models import (
    FECEntry,
)


class StoreFEC(FECBackend):
    """The functional-equivalence cache kept in the store, shared by every search of the
    database and surviving restarts.  Entries are written by ``Store.set_fitness``; a
    ``put`` for an entry that exists keeps the first."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, functional_hash: str, proxy_key: str) -> CachedFitness | None:
        return self.store.fec_get(functional_hash, proxy_key)

    def put(self, functional_hash: str, proxy_key: str, fitness: CachedFitness) -> None:
        self.store.put_fec(functional_hash, proxy_key, int(fitness.candidate), dict(fitness.scores))


def add_fec_entry(
    session: Session,
    functional_hash: str,
    proxy_key: str,
    candidate_id: int,
    scores: dict[str, float],
) -> None:
    """Add an FEC entry unless one exists: the first trained twin's fitness stays."""
    if session.get(FECEntry, (functional_hash, proxy_key)) is None:
        session.add(
            FECEntry(
                functional_hash=functional_hash,
                proxy_key=proxy_key,
                candidate_id=candidate_id,
                scores=scores,
            )
        )
