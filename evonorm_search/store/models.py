"""The results database's tables, as SQLAlchemy 2.x typed ORM models.

``searches`` holds one row per search, ``candidates`` every candidate a search ever
touched with its fate, ``evaluations`` one row per training run (candidate x
architecture x seed x stage), ``fec`` the functional-equivalence cache shared by every
search in the database, ``checkpoints`` the saved state of long runs not yet finished.
The schema is owned by the Alembic migrations in ``db/``: a change here needs a new
revision there (a test compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "CANDIDATE_STATUSES",
    "NAMED",
    "SEARCH_STATUSES",
    "Base",
    "Candidate",
    "Checkpoint",
    "Evaluation",
    "FECEntry",
    "Search",
]

# running: the driver works on it; completed: budget reached; exhausted: a cap on screened
# candidates or wall time ended it first; stopped: interrupted (resumable); failed: crashed.
SEARCH_STATUSES = ("running", "completed", "exhausted", "stopped", "failed")
# queued: passed screening, waits for compile + training; running: in a trial; trained:
# has its fitness; rejected: a funnel stage refused it (stage, reason); duplicate: a
# structural or functional duplicate (stage says which; no training, no budget);
# failed: its trial crashed (reason holds the error); named: a formula a user named for
# evaluation beyond the proxy (`transfer --layer FORMULA`), never screened nor trained on
# the proxy: not part of the search's funnel.
NAMED = "named"
CANDIDATE_STATUSES = ("queued", "running", "trained", "rejected", "duplicate", "failed", NAMED)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Search(Base):
    __tablename__ = "searches"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    space: Mapped[str] = mapped_column(Text)  # a shipped name or a file's absolute path
    strategy: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int]
    budget: Mapped[int]  # trained candidates
    architectures: Mapped[list[Any]]  # the proxy architectures, in the space's order
    # The objectives of the front the writer maintains (``on_front``), e.g. the proxy
    # architectures' names for per-architecture accuracy.
    objectives: Mapped[list[Any]]
    proxy_key: Mapped[str] = mapped_column(String(64))  # the FEC's key for this protocol
    config: Mapped[dict[str, Any]]  # the space and every option the search ran with
    code_version: Mapped[str] = mapped_column(String(40))
    # Worker time spent so far, over every sitting (wall time x workers): what a
    # `--worker-hours` budget counts.
    worker_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # The strategy's random state, so that a resume continues its stream.
    strategy_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("search_id", "birth"),
        Index("ix_candidates_search_status", "search_id", "status"),
        Index("ix_candidates_search_front", "search_id", "on_front"),
        Index("ix_candidates_search_mean", "search_id", "mean_score"),
        Index("ix_candidates_search_structure", "search_id", "structural_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    birth: Mapped[int]  # order of creation within the search, from 0
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"), index=True)
    mutation: Mapped[str | None] = mapped_column(Text)  # how the parent became this
    graph: Mapped[str] = mapped_column(Text)  # evonorm-graph/1 JSON, or the raw input
    formula: Mapped[str | None] = mapped_column(Text)
    structural_hash: Mapped[str | None] = mapped_column(String(64))
    functional_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(16))  # the last stage it reached
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    measured: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the fate's figures
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    seconds: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per funnel stage
    node_count: Mapped[int | None]
    bytes_per_element: Mapped[float | None] = mapped_column(Float)  # compiled traffic
    compiled: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # compile figures
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # architecture -> accuracy
    mean_score: Mapped[float | None] = mapped_column(Float)
    on_front: Mapped[bool] = mapped_column(Boolean, default=False)  # the search's front
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(String(16))  # proxy (the search) or retune
    architecture: Mapped[str] = mapped_column(String(40))
    dataset: Mapped[str] = mapped_column(String(40))
    preset: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int]
    steps: Mapped[int]  # steps actually trained
    accuracy: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    quality_accuracy: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # completed, rejected, diverged, failed
    seconds: Mapped[float] = mapped_column(Float)
    node: Mapped[str | None] = mapped_column(String(64))  # the Ray node it ran on
    # The code that ran it (provenance.code_version: the package version and git commit).
    code_version: Mapped[str | None] = mapped_column(String(40))
    # A stage's further figures (transfer: other splits, the learning rate, the curve).
    figures: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """The latest saved state of a long run that has not finished (a transfer run), under
    its key: the hash of everything that defines the run.  Removed when the run is stored."""

    __tablename__ = "checkpoints"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int]
    state: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FECEntry(Base):
    """A trained function's fitness under one proxy protocol, reused by its duplicates."""

    __tablename__ = "fec"

    functional_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    proxy_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    scores: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
