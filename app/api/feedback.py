"""Ratings of turns: a thumb up or down, a comment, a better answer; only on one's own."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response, status

from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import FeedbackOut, FeedbackRequest, error_responses
from app.store import feedback as feedback_store

router = APIRouter(tags=["feedback"], responses=error_responses(401, 404, 422, 429))


@router.post("/turns/{turn_id}/feedback", response_model=FeedbackOut)
async def feedback(
    turn_id: str, body: FeedbackRequest, user: CurrentUser, services: ServicesDep
) -> FeedbackOut:
    """Rate an answer (+1/-1), optionally with a comment and a better answer."""
    stored = await asyncio.to_thread(
        feedback_store.set_feedback,
        services.db,
        user.id,
        turn_id,
        rating=body.rating,
        comment=body.comment,
        corrected_answer=body.corrected_answer,
    )
    if stored is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no turn {turn_id!r}")
    return FeedbackOut.model_validate(stored, from_attributes=True)


@router.delete("/turns/{turn_id}/feedback", status_code=status.HTTP_204_NO_CONTENT)
async def unrate(turn_id: str, user: CurrentUser, services: ServicesDep) -> Response:
    """Take back a rating (the thumb un-clicked)."""
    if not await asyncio.to_thread(feedback_store.delete_feedback, services.db, user.id, turn_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rating of turn {turn_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
