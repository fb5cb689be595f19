"""Feedback and judgments: users' ratings, the judge's scores, and the queries over them.

The admin statistics and the trainer read them through these functions only.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload

from app.store.db import Database
from app.store.models import Feedback, Judgment, Turn, User


def set_feedback(
    db: Database,
    user_id: str,
    turn_id: str,
    *,
    rating: int,
    comment: str | None,
    corrected_answer: str | None,
) -> Feedback | None:
    """Record (or replace) the user's rating of their turn; None if the turn is not theirs."""
    with db.session() as session:
        turn = session.get(Turn, turn_id)
        if turn is None or turn.user_id != user_id:
            return None
        feedback = session.scalar(
            select(Feedback).where(Feedback.turn_id == turn_id, Feedback.user_id == user_id)
        )
        if feedback is None:
            feedback = Feedback(turn_id=turn_id, user_id=user_id, rating=rating)
            session.add(feedback)
        feedback.rating = rating
        feedback.comment = comment
        feedback.corrected_answer = corrected_answer
        feedback.created_at = datetime.now(UTC)
    return feedback


def delete_feedback(db: Database, user_id: str, turn_id: str) -> bool:
    """Take back the user's rating of their turn; False when there is none to take back."""
    with db.session() as session:
        result = session.execute(
            delete(Feedback).where(Feedback.turn_id == turn_id, Feedback.user_id == user_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def daily_ratings(db: Database) -> dict[tuple[str, str | None], tuple[int, int]]:
    """``(day, adapter version) -> (thumbs up, thumbs down)`` over every rating."""
    counts: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0])
    with db.session() as session:
        rows = session.execute(
            select(Feedback.created_at, Feedback.rating, Turn.adapter_version).join(
                Turn, Turn.id == Feedback.turn_id
            )
        )
        for created, rating, adapter in rows:
            counts[(created.date().isoformat(), adapter)][0 if rating > 0 else 1] += 1
    return {key: (up, down) for key, (up, down) in counts.items()}


class TrainingSignals(NamedTuple):
    """What the trainer learns from, read in one transaction."""

    untrusted: set[str]  # users whose turns and ratings are left out
    context_shared: set[str]  # users who let training prompts keep their sources and memories
    turns: list[Turn]  # oldest first, with feedback and judgments loaded
    feedback: list[Feedback]  # oldest first


def training_signals(db: Database) -> TrainingSignals:
    """Users' training choices, turns and ratings; the rows come detached from the session."""
    with db.session() as session:
        untrusted = set(session.scalars(select(User.id).where(User.trusted.is_(False))))
        shared = set(session.scalars(select(User.id).where(User.train_on_context.is_(True))))
        turns = list(
            session.scalars(
                select(Turn)
                .options(selectinload(Turn.feedback), selectinload(Turn.judgments))
                .order_by(Turn.created_at)
            )
        )
        feedback = list(session.scalars(select(Feedback).order_by(Feedback.created_at)))
        session.expunge_all()
    return TrainingSignals(untrusted, shared, turns, feedback)


def turns_to_judge(
    db: Database, judge_model: str, rubric_version: str
) -> tuple[set[str], list[Turn]]:
    """``(ids this judge and rubric judged already, every answered turn)``, oldest first."""
    with db.session() as session:
        done = set(
            session.scalars(
                select(Judgment.turn_id).where(
                    Judgment.judge_model == judge_model,
                    Judgment.rubric_version == rubric_version,
                )
            )
        )
        turns = [
            t
            for t in session.scalars(select(Turn).order_by(Turn.created_at))
            if t.answer and not t.error and t.messages
        ]
        session.expunge_all()
    return done, turns


def rated_turn_ids(db: Database) -> set[str]:
    """Ids of the turns some user rated."""
    with db.session() as session:
        return set(session.scalars(select(Feedback.turn_id).distinct()))


def add_judgment(db: Database, **fields: Any) -> None:
    """Store one judgment: ``turn_id``, ``judge_model``, ``rubric_version``, scores..."""
    with db.session() as session:
        session.add(Judgment(**fields))
