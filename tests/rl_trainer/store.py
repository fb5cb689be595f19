"""Hand-made turns in a real SQLite store, shaped like the ones the agent writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.agent import prompts
from app.store.db import Database
from app.store.models import Feedback, Judgment, Thread, Turn, User, new_id
from app.store.records import ChunkData


def add_user(db: Database, name: str, trusted: bool = True) -> str:
    with db.session() as session:
        user = User(name=name, api_key_hash=new_id() + new_id(), trusted=trusted)
        session.add(user)
        session.flush()
        return user.id


def add_turn(
    db: Database,
    user_id: str,
    question: str,
    answer: str,
    *,
    fact: str = "Water boils at 100 degrees Celsius.",
    thread_id: str | None = None,
    rating: int | None = None,
    corrected: str | None = None,
    judged: float | None = None,
    when: datetime | None = None,
    correction_in_sources: bool = True,
) -> Turn:
    """One stored turn (optionally rated, corrected and judged).

    Its source holds ``fact`` and, unless told otherwise, the corrected answer: users
    correct from their documents, and the trainer leaves out corrections the sources do
    not support.
    """
    text = f"{fact} {corrected}" if corrected and correction_in_sources else fact
    chunks: list[ChunkData] = [{"chunk_id": new_id(), "title": "facts", "text": text, "score": 0.9}]
    messages = [
        {"role": "system", "content": prompts.ANSWER_SYSTEM},
        {"role": "user", "content": prompts.user_message(question, chunks, [])},
    ]
    when = when or datetime.now(UTC)
    with db.session() as session:
        if thread_id is None or session.get(Thread, thread_id) is None:
            thread = Thread(id=thread_id or new_id(), user_id=user_id, title=question[:80])
            session.add(thread)
            session.flush()
            thread_id = thread.id
        turn = Turn(
            thread_id=thread_id,
            user_id=user_id,
            question=question,
            standalone_query=question,
            route="retrieve",
            messages=messages,
            retrieved=chunks,
            answer=answer,
            sources=[],
            model="tiny",
            created_at=when,
        )
        session.add(turn)
        session.flush()
        if rating is not None:
            session.add(
                Feedback(
                    turn_id=turn.id,
                    user_id=user_id,
                    rating=rating,
                    corrected_answer=corrected,
                    created_at=when + timedelta(seconds=1),
                )
            )
        if judged is not None:
            session.add(
                Judgment(
                    turn_id=turn.id,
                    judge_model="rule:leading_citation",
                    rubric_version="rule-v1",
                    scores={},
                    overall=judged,
                )
            )
        return turn


def count(db: Database, model: type[Any]) -> int:
    from sqlalchemy import func, select

    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)
