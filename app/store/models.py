"""Tables of the store. Column comments say what the trainer relies on.

JSON columns hold structured records (messages, chunks, timings) exactly as they were
used, so a trained adapter can be traced back to the turns it learned from.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    """A fresh random id (UUID4, hex without dashes)."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back aware, in UTC.

    SQLite keeps no offset, so its rows would come back naive and the API would send
    times without a zone; PostgreSQL's ``timestamptz`` may come back in the session's
    zone. Both are normalised here, once, for every reader.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Stored in UTC."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Read back aware, in UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with JSON for ``dict``/``list`` annotations."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012 (SQLAlchemy API)


class Role(enum.StrEnum):
    """What a user may do: admins also train, promote and see every adapter."""

    user = "user"
    admin = "admin"


class DocumentStatus(enum.StrEnum):
    """Where a document is in ingestion."""

    ingesting = "ingesting"
    ready = "ready"
    failed = "failed"


class AdapterStatus(enum.StrEnum):
    """Life cycle of an adapter version; exactly one version at most is ``active``."""

    candidate = "candidate"
    canary = "canary"  # passed the gate; serves a sticky share of users until decided
    active = "active"
    retired = "retired"
    rejected = "rejected"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native PG enum), so adding a value needs no type change.
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class User(Base):
    """A person or service with an API key (only its SHA-256 is stored)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.user)
    trusted: Mapped[bool] = mapped_column(Boolean, default=True)  # untrusted: left out of training
    # Opt-in: training prompts keep this user's retrieved sources and memories; off, the
    # trainer leaves them out (the shared adapter must not learn other users' documents).
    train_on_context: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Thread(Base):
    """A conversation; its history lives in the agent's checkpointer under the same id."""

    __tablename__ = "threads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    turns: Mapped[list[Turn]] = relationship(
        back_populates="thread", cascade="all, delete-orphan", order_by="Turn.created_at"
    )


class Turn(Base):
    """One question and answer, with everything that produced the answer."""

    __tablename__ = "turns"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    collection: Mapped[str | None] = mapped_column(String(128))
    question: Mapped[str] = mapped_column(Text)
    standalone_query: Mapped[str | None] = mapped_column(Text)
    route: Mapped[str | None] = mapped_column(String(32))  # retrieve | direct
    messages: Mapped[list[Any]] = mapped_column(default=list)  # exactly as sent to the model
    retrieved: Mapped[list[Any]] = mapped_column(default=list)  # chunk id, doc, text, score, source
    memories: Mapped[list[Any]] = mapped_column(default=list)
    answer: Mapped[str] = mapped_column(Text, default="")
    sources: Mapped[list[Any]] = mapped_column(default=list)  # the cited chunks, numbered
    model: Mapped[str | None] = mapped_column(String(256))  # base model name
    adapter_version: Mapped[str | None] = mapped_column(String(256))  # served adapter name
    arm: Mapped[str | None] = mapped_column(String(16))  # canary | control | None (no canary)
    sampling: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # ms per stage
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    thread: Mapped[Thread] = relationship(back_populates="turns")
    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="turn", cascade="all, delete-orphan"
    )
    judgments: Mapped[list[Judgment]] = relationship(
        back_populates="turn", cascade="all, delete-orphan"
    )


class Feedback(Base):
    """A user's rating of a turn, with an optional comment and corrected answer."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("turn_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    rating: Mapped[int] = mapped_column(Integer)  # +1 or -1
    comment: Mapped[str | None] = mapped_column(Text)
    corrected_answer: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    turn: Mapped[Turn] = relationship(back_populates="feedback")


class Judgment(Base):
    """An LLM judge's scores for a turn under a versioned rubric."""

    __tablename__ = "judgments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    judge_model: Mapped[str] = mapped_column(String(256))
    rubric_version: Mapped[str] = mapped_column(String(32))
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    overall: Mapped[float] = mapped_column(Float)
    rationale: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    turn: Mapped[Turn] = relationship(back_populates="judgments")


class Document(Base):
    """A user's document; its chunks live in Qdrant under the same id."""

    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    collection: Mapped[str] = mapped_column(String(128), default="default")
    title: Mapped[str] = mapped_column(String(512), default="")
    filename: Mapped[str] = mapped_column(String(512), default="")
    content_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[DocumentStatus] = mapped_column(
        _enum(DocumentStatus), default=DocumentStatus.ingesting
    )
    error: Mapped[str | None] = mapped_column(Text)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AdapterVersion(Base):
    """A trained LoRA adapter version: the single source of truth for what serves."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    base_model: Mapped[str] = mapped_column(String(256))
    status: Mapped[AdapterStatus] = mapped_column(
        _enum(AdapterStatus), default=AdapterStatus.candidate, index=True
    )
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def served_name(self) -> str:
        """The never-reused name the model server knows this version by."""
        return f"{self.name}-v{self.version}"


class LoopState(Base):
    """The online loop's state: one row (id 1), so it survives restarts of the trainer.

    ``holder``/``lock_expires_at`` is the lock that lets one trainer run at a time; the
    holder renews it while it works, so a killed trainer's lock lapses by itself.
    """

    __tablename__ = "loop_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    train_requested: Mapped[bool] = mapped_column(Boolean, default=False)  # "train now"
    signals_since: Mapped[datetime | None] = mapped_column(UTCDateTime())  # new signals after
    round_id: Mapped[str | None] = mapped_column(String(64))  # the last round's run directory
    round_status: Mapped[str | None] = mapped_column(String(16))  # running|done|failed|...
    round_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    round_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    round_message: Mapped[str | None] = mapped_column(Text)
    next_round_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    holder: Mapped[str | None] = mapped_column(String(256))
    lock_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the loop's own, shown


class LoopEvent(Base):
    """One decision of the online loop or an admin, with the figures it was taken on."""

    __tablename__ = "loop_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[str | None] = mapped_column(String(256))  # served name it concerns
    actor: Mapped[str] = mapped_column(String(160), default="online")
    message: Mapped[str] = mapped_column(Text, default="")
    figures: Mapped[dict[str, Any]] = mapped_column(default=dict)
