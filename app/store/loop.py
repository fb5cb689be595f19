"""The online loop's record: its state row, its lock, its decisions, and the canary's turns.

The API (admins' controls, the chat's canary routing) and the trainer (``rl-trainer
online``) share these functions, so both sides read and write the same rows the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from app.store.db import Database
from app.store.models import (
    AdapterStatus,
    AdapterVersion,
    Feedback,
    Judgment,
    LoopEvent,
    LoopState,
    Turn,
    User,
)

STATE_ID = 1
CANARY = "canary"  # the arm a turn was answered in while a canary is on trial
CONTROL = "control"


def _now() -> datetime:
    return datetime.now(UTC)


def loop_state(db: Database) -> LoopState:
    """The loop's state row (made on first use)."""
    with db.session() as session:
        row = session.get(LoopState, STATE_ID)
        if row is None:
            row = LoopState(id=STATE_ID, paused=False, train_requested=False, settings={})
            session.add(row)
        return row


def update_loop(db: Database, **fields: Any) -> LoopState:
    """Set fields of the state row; the row as it is now."""
    loop_state(db)
    with db.session() as session:
        row = session.get(LoopState, STATE_ID)
        assert row is not None  # made just above
        for key, value in fields.items():
            setattr(row, key, value)
        return row


def lock_alive(state: LoopState) -> bool:
    """Whether a trainer holds the loop's lock now (its heartbeat keeps it from lapsing)."""
    return bool(state.holder and state.lock_expires_at and state.lock_expires_at > _now())


def loop_phase(state: LoopState, canary_on_trial: bool) -> str:
    """``paused``, ``not running``, ``training``, ``canary`` or ``waiting``."""
    if state.paused:
        return "paused"
    if not lock_alive(state):
        return "not running"
    if state.round_status == "running":
        return "training"
    return "canary" if canary_on_trial else "waiting"


def acquire_lock(db: Database, holder: str, ttl_s: float, *, take_over: str | None = None) -> bool:
    """Take the one-trainer lock for ``ttl_s`` seconds, or renew it; False if another holds it.

    One conditional UPDATE, so two trainers racing for it cannot both win (SQLite and
    PostgreSQL alike). ``take_over`` names a holder known to be dead (a killed process on
    this host) whose lock may be taken before it lapses.
    """
    loop_state(db)
    now = _now()
    free = or_(
        LoopState.holder.is_(None),
        LoopState.holder == holder,
        LoopState.lock_expires_at < now,
        *([LoopState.holder == take_over] if take_over else []),
    )
    with db.session() as session:
        done = session.execute(
            update(LoopState)
            .where(LoopState.id == STATE_ID, free)
            .values(holder=holder, lock_expires_at=now + timedelta(seconds=ttl_s), heartbeat_at=now)
        )
        return bool(getattr(done, "rowcount", 0))


def release_lock(db: Database, holder: str) -> None:
    """Give the lock back (only its holder can)."""
    with db.session() as session:
        session.execute(
            update(LoopState)
            .where(LoopState.id == STATE_ID, LoopState.holder == holder)
            .values(holder=None, lock_expires_at=None)
        )


def add_event(
    db: Database,
    kind: str,
    message: str,
    *,
    version: str | None = None,
    actor: str = "online",
    figures: dict[str, Any] | None = None,
) -> LoopEvent:
    """Record one decision with the figures it was taken on."""
    with db.session() as session:
        row = LoopEvent(
            kind=kind, message=message, version=version, actor=actor, figures=figures or {}
        )
        session.add(row)
        return row


def recent_events(db: Database, limit: int = 50) -> list[LoopEvent]:
    """The newest decisions first."""
    with db.session() as session:
        stmt = select(LoopEvent).order_by(LoopEvent.id.desc()).limit(limit)
        return list(session.scalars(stmt))


def count_events(db: Database) -> dict[str, int]:
    """How many events of each kind (for the metrics)."""
    with db.session() as session:
        rows = session.execute(select(LoopEvent.kind, func.count()).group_by(LoopEvent.kind))
        return {kind: int(n) for kind, n in rows}


def serving_versions(db: Database) -> tuple[AdapterVersion | None, AdapterVersion | None]:
    """``(active, canary)``: the version serving everyone else, and the one on trial."""
    with db.session() as session:
        rows = session.scalars(
            select(AdapterVersion).where(
                AdapterVersion.status.in_([AdapterStatus.active, AdapterStatus.canary])
            )
        ).all()
    active = next((r for r in rows if r.status == AdapterStatus.active), None)
    canary = next((r for r in rows if r.status == AdapterStatus.canary), None)
    return active, canary


def canary_share(version: AdapterVersion) -> float:
    """The share of users a canary version serves (recorded when its trial began)."""
    return float((version.manifest.get("canary") or {}).get("share", 0.0))


def canary_started(version: AdapterVersion) -> datetime | None:
    """When a version's canary trial began."""
    started = (version.manifest.get("canary") or {}).get("started_at")
    return datetime.fromisoformat(started) if started else None


def new_signals(db: Database, since: datetime | None) -> int:
    """Users' ratings (by trusted users) after ``since``: what starts an online round.

    Judgments are not counted: the round makes them itself, so they would start the next.
    """
    with db.session() as session:
        ratings = select(func.count(Feedback.id)).join(User, User.id == Feedback.user_id)
        ratings = ratings.where(User.trusted.is_(True))
        if since is not None:
            ratings = ratings.where(Feedback.created_at > since)
        return int(session.scalar(ratings) or 0)


@dataclass
class ArmTurn:
    """One turn answered during a canary trial, with what users and the judge said."""

    arm: str
    answer: str
    n_sources: int
    error: bool
    rating: int | None
    judge: float | None


@dataclass
class ArmCounts:
    """One arm's turns, errors and ratings."""

    turns: int = 0
    errors: int = 0
    rated: int = 0
    down: int = 0

    @property
    def down_rate(self) -> float | None:
        """Share of rated turns rated thumbs down."""
        return self.down / self.rated if self.rated else None

    @property
    def error_rate(self) -> float | None:
        """Share of turns that failed."""
        return self.errors / self.turns if self.turns else None


def count(turns: list[ArmTurn], arm: str) -> ArmCounts:
    """The counts of ``arm`` among ``turns``."""
    mine = [t for t in turns if t.arm == arm]
    rated = [t for t in mine if t.rating is not None]
    return ArmCounts(
        turns=len(mine),
        errors=sum(1 for t in mine if t.error),
        rated=len(rated),
        down=sum(1 for t in rated if (t.rating or 0) < 0),
    )


def arm_turns(db: Database, since: datetime) -> list[ArmTurn]:
    """Every canary and control turn since ``since`` (the trial's start)."""
    with db.session() as session:
        turns = session.scalars(
            select(Turn).where(Turn.created_at >= since, Turn.arm.is_not(None))
        ).all()
        ids = [t.id for t in turns]
        ratings: dict[str, int] = {}
        scores: dict[str, float] = {}
        if ids:
            for turn_id, rating in session.execute(
                select(Feedback.turn_id, Feedback.rating).where(Feedback.turn_id.in_(ids))
            ):
                ratings[turn_id] = int(rating)  # one user per turn: the owner rates it
            for turn_id, overall in session.execute(
                select(Judgment.turn_id, Judgment.overall).where(Judgment.turn_id.in_(ids))
            ):
                scores[turn_id] = float(overall)
        return [
            ArmTurn(
                arm=str(t.arm),
                answer=t.answer,
                n_sources=len(t.retrieved or []),
                error=bool(t.error),
                rating=ratings.get(t.id),
                judge=scores.get(t.id),
            )
            for t in turns
        ]


def start_canary(db: Database, version_id: int, share: float) -> None:
    """Put a candidate on trial for ``share`` of users (the caller loaded it into the server)."""
    with db.session() as session:
        row = session.get(AdapterVersion, version_id)
        if row is None:
            return
        row.status = AdapterStatus.canary
        row.manifest = {
            **row.manifest,
            "canary": {"share": share, "started_at": _now().isoformat()},
        }


def end_canary(db: Database, version_id: int, verdict: dict[str, Any]) -> None:
    """Record the trial's verdict in the version's manifest."""
    with db.session() as session:
        row = session.get(AdapterVersion, version_id)
        if row is not None:
            trial = dict(row.manifest.get("canary") or {})
            trial |= {**verdict, "ended_at": _now().isoformat()}
            row.manifest = {**row.manifest, "canary": trial}
