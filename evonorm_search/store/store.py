"""The results store: one object per database, for the search driver (the one writer) and
for readers (CLI queries, dashboards).

Every write is its own transaction, or part of one ``batch()``; a reader opened with
``readonly=True`` never creates, migrates or writes.  The writer keeps the default Pareto
front (the ``on_front`` flags) as it records fitness: a new point is compared with the
current front only, so that reading the front is an indexed query at any size.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from evonorm_search.errors import StoreError
from evonorm_search.hashing import CachedFitness
from evonorm_search.pareto import dominates
from evonorm_search.provenance import code_version as current_code_version
from evonorm_search.store import queries
from evonorm_search.store.engine import (
    check_schema,
    default_url,
    driver_message,
    make_engine,
    mask,
)
from evonorm_search.store.fec import StoreFEC, add_fec_entry
from evonorm_search.store.models import (
    CANDIDATE_STATUSES,
    SEARCH_STATUSES,
    Candidate,
    Checkpoint,
    Evaluation,
    FECEntry,
    Search,
    utcnow,
)
from evonorm_search.store.reads import StoreReads
from evonorm_search.store.values import column_length, finite, fits, jsonable, raw_text

if TYPE_CHECKING:
    from evonorm_search.rejection import Screening

__all__ = ["Store", "StoreFEC", "check_search_name"]

_BAD_NAME = re.compile(r"[/\x00-\x1f\x7f]")
# The writer's hot path, built once (building SQLAlchemy statements costs more than
# running them on SQLite).
_NEXT_BIRTH = sa.select(sa.func.coalesce(sa.func.max(Candidate.birth) + 1, 0)).where(
    Candidate.search_id == sa.bindparam("search_id")
)
_INSERT_CANDIDATE = sa.insert(Candidate.__table__).returning(Candidate.__table__.c.id)
_INSERT_EVALUATION = sa.insert(Evaluation.__table__)


def check_search_name(name: str) -> str:
    """``name`` if it can name a search: 1-200 characters, no ``/`` or control characters,
    not ``.`` or ``..`` (names are path segments of URLs, and appear in file names)."""
    if not name or len(name) > 200 or _BAD_NAME.search(name) or name in (".", ".."):
        raise StoreError(
            f"bad search name {name!r}: 1-200 characters, no '/' or control "
            "characters, not '.' or '..'"
        )
    return name


class Store(StoreReads):
    """The results database at ``url`` (default ``$EVONORM_DB`` or sqlite:///evonorm.db).

    A writable store creates a new database at the current schema; any store refuses a
    database at another schema revision (see ``evonorm-search db upgrade``).  Not
    thread-safe: one writer per database, any number of readers in other processes.
    """

    def __init__(self, url: str | None = None, *, readonly: bool = False) -> None:
        self.url = url or default_url()
        self.readonly = readonly
        self.engine = make_engine(self.url, readonly=readonly)
        try:
            check_schema(self.engine, create=not readonly)
        except BaseException:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._batch: Session | None = None
        # What never changes about a search (id, architectures, objectives, proxy key),
        # so that the writer's hot path does not read it again for every candidate.
        self._searches: dict[str | int, _SearchFacts] = {}

    def __repr__(self) -> str:
        return f"Store({mask(self.engine.url)!r}{', readonly' if self.readonly else ''})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- sessions ------------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes inside into one transaction (all or nothing): the driver
        records a burst of screened candidates at the cost of one commit."""
        if self._batch is not None:
            yield
            return
        with self._write_session() as session:
            self._batch = session
            try:
                yield
            finally:
                self._batch = None

    @contextlib.contextmanager
    def _write_session(self) -> Iterator[Session]:
        if self.readonly:
            raise StoreError(f"{self!r} is read-only")
        try:
            with self._guard(), self._sessions.begin() as session:
                yield session
        except BaseException:
            self._searches.clear()  # it may hold a search whose creation was rolled back
            raise

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        if self._batch is not None:
            yield self._batch
        else:
            with self._write_session() as session:
                yield session

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        with self._guard(), self._sessions() as session:
            yield session

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Database failures (a lost connection, a locked file) as one-line StoreErrors."""
        try:
            yield
        except sa.exc.DBAPIError as e:
            message = driver_message(e, self.engine.url)
            raise StoreError(f"database {mask(self.engine.url)}: {message}") from e

    # -- writes --------------------------------------------------------------------------

    def create_search(
        self,
        name: str,
        *,
        space: str,
        strategy: str,
        seed: int,
        budget: int,
        architectures: Sequence[str],
        proxy_key: str,
        objectives: Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> int:
        """A new search (status running); its name must be new, without ``/`` or control
        characters.  ``objectives`` default to per-architecture accuracy."""
        check_search_name(name)
        chosen = queries.validate_objectives(objectives or architectures, architectures)
        with self._write() as session:
            if session.scalar(sa.select(Search.id).where(Search.name == name)) is not None:
                raise StoreError(
                    f"a search named {name!r} exists already (resume it, or choose another name)"
                )
            search = Search(
                name=name,
                space=space,
                strategy=fits(Search.strategy, strategy),
                status="running",
                seed=seed,
                budget=budget,
                architectures=list(architectures),
                objectives=chosen,
                proxy_key=fits(Search.proxy_key, proxy_key),
                config=jsonable(config),
                code_version=fits(Search.code_version, current_code_version()),
            )
            session.add(search)
            session.flush()
            return search.id

    def set_search_status(self, name: str, status: str) -> None:
        if status not in SEARCH_STATUSES:
            raise ValueError(f"search status must be one of {SEARCH_STATUSES}, not {status!r}")
        with self._write() as session:
            search = queries.get_search(session, name)
            search.status = status
            search.finished_at = None if status == "running" else utcnow()

    def set_search_config(self, name: str, config: Mapping[str, Any]) -> None:
        with self._write() as session:
            queries.get_search(session, name).config = jsonable(config)

    def set_search_progress(
        self,
        name: str,
        *,
        worker_seconds: float | None = None,
        strategy_state: Mapping[str, Any] | None = None,
    ) -> None:
        """What a resume continues from: the worker time spent over every sitting, and the
        strategy's random state."""
        with self._write() as session:
            search = queries.get_search(session, name)
            if worker_seconds is not None:
                search.worker_seconds = float(worker_seconds)
            if strategy_state is not None:
                search.strategy_state = dict(strategy_state)

    def _facts(
        self, session: Session, name: str | None = None, search_id: int | None = None
    ) -> _SearchFacts:
        key = name if name is not None else search_id
        facts = self._searches.get(key)
        if facts is None:
            s = (
                queries.get_search(session, name)
                if name is not None
                else session.get(Search, search_id)
            )
            facts = _SearchFacts(s.id, tuple(s.architectures), tuple(s.objectives), s.proxy_key)
            self._searches[s.name] = self._searches[s.id] = facts
        return facts

    def add_candidate(
        self,
        search: str,
        *,
        graph: str,
        status: str,
        formula: str | None = None,
        structural_hash: str | None = None,
        functional_hash: str | None = None,
        stage: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        measured: Mapping[str, Any] | None = None,
        parent: int | None = None,
        mutation: str | None = None,
        duplicate_of: int | None = None,
        seconds: Mapping[str, float] | None = None,
        node_count: int | None = None,
    ) -> int:
        """Record a candidate of ``search``; returns its id (ids are unique across the
        database, birth order counts within the search)."""
        _check_status(status)
        with self._write() as session:
            search_id = self._facts(session, search).search_id
            birth = session.scalar(_NEXT_BIRTH, {"search_id": search_id})
            return session.scalar(
                _INSERT_CANDIDATE,
                {
                    "search_id": search_id,
                    "birth": birth,
                    "parent_id": parent,
                    "mutation": mutation,
                    "graph": graph,
                    "formula": formula,
                    "structural_hash": fits(Candidate.structural_hash, structural_hash),
                    "functional_hash": fits(Candidate.functional_hash, functional_hash),
                    "status": status,
                    "stage": fits(Candidate.stage, stage),
                    "reason": reason,
                    "detail": detail,
                    "measured": jsonable(measured),
                    "duplicate_of": duplicate_of,
                    "seconds": dict(seconds or {}),
                    "node_count": node_count,
                },
            )

    def record_screening(
        self,
        search: str,
        screening: Screening,
        *,
        source: Any = None,
        parent: int | None = None,
        mutation: str | None = None,
    ) -> int:
        """Record a candidate with the funnel's verdict: ``rejected`` or ``duplicate``
        with the stage and reason that stopped it, else ``queued`` for training.  An FEC
        hit links to the trained candidate whose fitness it shares.  ``source`` is the
        raw input, kept when the candidate did not parse."""
        fate = screening.fate
        graph = screening.graph
        if fate.passed:
            status = "queued"
        elif fate.stage in ("duplicate", "functional"):
            status = "duplicate"
        else:
            status = "rejected"
        twin = fate.values.get("candidate") if fate.stage == "functional" else None
        return self.add_candidate(
            search,
            graph=graph.to_json() if graph is not None else raw_text(source),
            formula=graph.formula() if graph is not None else None,
            structural_hash=screening.structural_hash,
            functional_hash=screening.functional_hash,
            status=status,
            stage=fate.stage,
            reason=fate.reason,
            detail=fate.detail or None,
            measured=fate.values,
            parent=parent,
            mutation=mutation,
            duplicate_of=int(twin) if twin is not None and str(twin).isdigit() else None,
            seconds=screening.seconds,
            node_count=len(graph.pruned().nodes) if graph is not None else None,
        )

    def update_candidate(
        self,
        candidate_id: int,
        *,
        status: str | None = None,
        stage: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        measured: Mapping[str, Any] | None = None,
        compiled: Mapping[str, Any] | None = None,
        bytes_per_element: float | None = None,
        seconds: Mapping[str, float] | None = None,
    ) -> None:
        """Move a candidate along (queued -> running -> rejected/failed), with the stage
        and reason of its fate, compile figures and per-stage seconds.  Recording its
        fitness is ``set_fitness``."""
        if status is not None:
            _check_status(status)
            if status == "trained":
                raise ValueError("a candidate becomes trained through set_fitness(scores)")
        with self._write() as session:
            c = _get_candidate(session, candidate_id)
            if status is not None:
                c.status = status
                c.stage, c.reason, c.detail = fits(Candidate.stage, stage), reason, detail
            if measured is not None:  # added to what screening measured
                c.measured = {**c.measured, **jsonable(measured)}
            if compiled is not None:
                c.compiled = jsonable(compiled)
            if bytes_per_element is not None:
                c.bytes_per_element = bytes_per_element
            if seconds is not None:
                c.seconds = {**c.seconds, **seconds}

    def add_evaluation(
        self,
        candidate_id: int,
        *,
        architecture: str,
        dataset: str,
        preset: str,
        seed: int,
        steps: int,
        status: str,
        seconds: float,
        accuracy: float | None = None,
        loss: float | None = None,
        quality_accuracy: float | None = None,
        stage: str = "proxy",
        node: str | None = None,
        code_version: str | None = None,
        figures: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one training run of a candidate on one architecture (``node``: the Ray
        node it ran on; ``code_version``: the code that ran it, this process's by default;
        ``figures``: a stage's further figures, JSON)."""
        with self._write() as session:
            try:
                session.execute(
                    _INSERT_EVALUATION,
                    {
                        "candidate_id": candidate_id,
                        "stage": fits(Evaluation.stage, stage),
                        "architecture": fits(Evaluation.architecture, architecture),
                        "dataset": fits(Evaluation.dataset, dataset),
                        "preset": fits(Evaluation.preset, preset),
                        "seed": seed,
                        "steps": steps,
                        "accuracy": finite(accuracy),
                        "loss": finite(loss),
                        "quality_accuracy": finite(quality_accuracy),
                        "status": fits(Evaluation.status, status),
                        "seconds": seconds,
                        # A host name outside Ray may be longer than a node id: cut, not refused.
                        "node": None if node is None else node[: column_length(Evaluation.node)],
                        "code_version": fits(
                            Evaluation.code_version, code_version or current_code_version()
                        ),
                        "figures": None if figures is None else jsonable(figures),
                    },
                )
            except sa.exc.IntegrityError:  # the foreign key: no such candidate
                raise StoreError(f"unknown candidate id {candidate_id}") from None

    def set_fitness(self, candidate_id: int, scores: Mapping[str, float]) -> bool:
        """Mark a candidate trained with its per-architecture accuracies, update the
        search's front and the FEC in the same transaction; returns whether the candidate
        joined the front."""
        with self._write() as session:
            c = _get_candidate(session, candidate_id)
            search = self._facts(session, search_id=c.search_id)
            missing = set(search.architectures) - set(scores)
            if missing:
                raise ValueError(f"scores lack {', '.join(sorted(missing))}")
            if not all(math.isfinite(scores[a]) for a in search.architectures):
                raise ValueError(f"scores must be finite numbers, got {dict(scores)}")
            c.scores = {a: float(scores[a]) for a in search.architectures}
            c.mean_score = math.fsum(c.scores.values()) / len(c.scores)
            c.status, c.stage, c.reason, c.detail = "trained", "proxy", None, None
            c.on_front = self._update_front(session, search, c)
            if c.functional_hash is not None:
                add_fec_entry(session, c.functional_hash, search.proxy_key, c.id, c.scores)
            return c.on_front

    def put_checkpoint(self, key: str, candidate_id: int, step: int, state: bytes) -> None:
        """Keep ``state`` as the latest checkpoint of the run ``key`` (replacing an older one)."""
        with self._write() as session:
            _get_candidate(session, candidate_id)
            row = session.get(Checkpoint, key)
            if row is None:
                session.add(Checkpoint(key=key, candidate_id=candidate_id, step=step, state=state))
            else:
                row.candidate_id, row.step, row.state = candidate_id, step, state

    def checkpoint(self, key: str) -> tuple[int, bytes] | None:
        """The step and state of the run ``key``'s latest checkpoint, or None."""
        with self._read() as session:
            row = session.get(Checkpoint, key)
            return None if row is None else (row.step, bytes(row.state))

    def drop_checkpoint(self, key: str) -> None:
        """Forget the run ``key``'s checkpoint (its result is stored)."""
        with self._write() as session:
            session.execute(sa.delete(Checkpoint).where(Checkpoint.key == key))

    def set_retune(self, candidate_id: int, record: Mapping[str, Any]) -> None:
        """Keep a retune's settings and chosen learning rate with the candidate, under
        ``measured["retune"]`` (``queries.RETUNE_KEY``); its runs are evaluations with
        stage ``retune``."""
        with self._write() as session:
            c = _get_candidate(session, candidate_id)
            c.measured = {**(c.measured or {}), queries.RETUNE_KEY: jsonable(record)}

    @staticmethod
    def _update_front(session: Session, search: _SearchFacts, c: Candidate) -> bool:
        objectives = search.objectives
        point = queries.objective_vector(
            objectives, c.scores, c.mean_score, c.bytes_per_element, c.node_count
        )
        if point is None:
            return False
        members = session.execute(
            sa.select(
                Candidate.id,
                Candidate.scores,
                Candidate.mean_score,
                Candidate.bytes_per_element,
                Candidate.node_count,
            ).where(
                Candidate.search_id == search.search_id, Candidate.on_front, Candidate.id != c.id
            )
        ).all()
        vectors = np.array(
            [queries.objective_vector(objectives, *values) for _, *values in members]
        ).reshape(len(members), len(objectives))
        p = np.array(point)
        if len(members) and dominates(vectors, p).any():
            return False
        beaten = [m.id for m, lost in zip(members, dominates(p, vectors), strict=True) if lost]
        if beaten:
            session.execute(
                sa.update(Candidate).where(Candidate.id.in_(beaten)).values(on_front=False)
            )
        return True

    # -- reads ---------------------------------------------------------------------------

    def fec_get(self, functional_hash: str, proxy_key: str) -> CachedFitness | None:
        with self._read() as session:
            entry = session.get(FECEntry, (functional_hash, proxy_key))
            if entry is None:
                return None
            return CachedFitness(str(entry.candidate_id), dict(entry.scores))

    def fec_backend(self) -> StoreFEC:
        return StoreFEC(self)

    def put_fec(
        self, functional_hash: str, proxy_key: str, candidate_id: int, scores: dict[str, float]
    ) -> None:
        """Add an FEC entry unless one exists (``StoreFEC.put``)."""
        with self._write() as session:
            add_fec_entry(session, functional_hash, proxy_key, candidate_id, scores)


@dataclass(frozen=True)
class _SearchFacts:
    search_id: int
    architectures: tuple[str, ...]
    objectives: tuple[str, ...]
    proxy_key: str


def _check_status(status: str) -> None:
    if status not in CANDIDATE_STATUSES:
        raise ValueError(f"candidate status must be one of {CANDIDATE_STATUSES}, not {status!r}")


def _get_candidate(session: Session, candidate_id: int) -> Candidate:
    c = session.get(Candidate, candidate_id)
    if c is None:
        raise StoreError(f"unknown candidate id {candidate_id}")
    return c
