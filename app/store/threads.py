"""Threads and turns: written by the agent, read back only by their owner."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload

from app.store.db import Database
from app.store.models import Thread, Turn, new_id
from app.store.records import TurnRecord


def get_or_create_thread(
    db: Database, user_id: str, thread_id: str | None, title: str
) -> tuple[Thread, bool] | None:
    """The user's thread ``thread_id`` (None if it is not theirs), or a new one."""
    with db.session() as session:
        if thread_id:
            thread = session.get(Thread, thread_id)
            if thread is None or thread.user_id != user_id:
                return None
            return thread, False
        thread = Thread(id=new_id(), user_id=user_id, title=title.strip()[:200])
        session.add(thread)
    return thread, True


def list_threads(db: Database, user_id: str) -> list[Thread]:
    """The user's threads, newest activity first."""
    with db.session() as session:
        rows = session.scalars(
            select(Thread).where(Thread.user_id == user_id).order_by(Thread.updated_at.desc())
        )
        return list(rows)


def get_thread(db: Database, user_id: str, thread_id: str) -> Thread | None:
    """The thread with its turns and their feedback, if it is the user's."""
    with db.session() as session:
        thread = session.scalar(
            select(Thread)
            .where(Thread.id == thread_id, Thread.user_id == user_id)
            .options(selectinload(Thread.turns).selectinload(Turn.feedback))
        )
        return thread


def delete_thread(db: Database, user_id: str, thread_id: str) -> bool:
    """Delete the user's thread with its turns; False when it is not theirs."""
    with db.session() as session:
        result = session.execute(
            delete(Thread).where(Thread.id == thread_id, Thread.user_id == user_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def save_turn(db: Database, record: TurnRecord) -> None:
    """Store a finished turn and touch its thread, in one transaction."""
    with db.session() as session:
        session.add(Turn(**record.columns()))
        thread = session.get(Thread, record.thread_id)
        if thread is not None:
            thread.updated_at = datetime.now(UTC)


def get_turn(db: Database, user_id: str, turn_id: str) -> Turn | None:
    """The user's turn, or None (also when it belongs to someone else)."""
    with db.session() as session:
        turn = session.get(Turn, turn_id)
        return turn if turn is not None and turn.user_id == user_id else None
