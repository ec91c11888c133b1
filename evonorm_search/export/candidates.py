"""Reading a candidate from a results store to export it or load it as a layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evonorm_search.errors import GraphError
from evonorm_search.graph import LayerGraph
from evonorm_search.layer import GraphNormAct


def read_candidate(db_url: str | None, candidate_id: int) -> tuple[LayerGraph, dict[str, Any]]:
    """Candidate ``candidate_id``'s graph in the results store at ``db_url`` (read-only;
    None: the default database) and its record (``Store.candidate``: provenance_of gives
    what an export's docstring says of it).  A stored graph that does not parse or is not a
    layer raises a one-line :class:`GraphError`; an unknown id a StoreError."""
    from evonorm_search.store import Store

    with Store(db_url, readonly=True) as store:
        record = store.candidate(candidate_id)
    try:
        graph = LayerGraph.from_json(record["graph"]).validate()
    except GraphError as e:
        raise GraphError(f"candidate {candidate_id} is not a valid layer: {e}") from None
    return graph, record


def provenance_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """What an exported module's docstring says of the stored candidate ``record``
    (``Store.candidate``): search, candidate, status and, when trained, its scores."""
    provenance = {"search": record["search"], "candidate": record["id"], "status": record["status"]}
    if record["scores"]:
        provenance.update(scores=record["scores"], mean_score=record["mean_score"])
    return provenance


def load_layer(
    db_url: str | None, candidate_id: int, num_channels: int, **kwargs: Any
) -> GraphNormAct:
    """``GraphNormAct`` of candidate ``candidate_id`` in the store at ``db_url``;
    ``kwargs`` go to GraphNormAct (groups, eps, momentum, affine, backend, ...)."""
    graph, _ = read_candidate(db_url, candidate_id)
    return GraphNormAct(graph, num_channels, **kwargs)
