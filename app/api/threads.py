"""Threads and their turns: only ever the caller's own."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response, status

from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import Source, ThreadDetail, ThreadOut, TurnOut, error_responses
from app.store import threads as store
from app.store.records import numbered_sources

router = APIRouter(tags=["threads"], responses=error_responses(401, 404, 429))


@router.get("/threads", response_model=list[ThreadOut])
async def list_threads(user: CurrentUser, services: ServicesDep) -> list[ThreadOut]:
    """The caller's threads, newest activity first."""
    rows = await asyncio.to_thread(store.list_threads, services.db, user.id)
    return [ThreadOut.model_validate(t, from_attributes=True) for t in rows]


@router.get("/threads/{thread_id}", response_model=ThreadDetail)
async def get_thread(thread_id: str, user: CurrentUser, services: ServicesDep) -> ThreadDetail:
    """A thread with its turns."""
    thread = await asyncio.to_thread(store.get_thread, services.db, user.id, thread_id)
    if thread is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no thread {thread_id!r}")
    turns = [
        TurnOut(
            id=t.id,
            question=t.question,
            answer=t.answer,
            sources=[Source.model_validate(s) for s in numbered_sources(t.retrieved, t.sources)],
            created_at=t.created_at,
            adapter_version=t.adapter_version,
            error=t.error,
            rating=next((f.rating for f in t.feedback if f.user_id == user.id), None),
        )
        for t in thread.turns
    ]
    return ThreadDetail(
        id=thread.id,
        title=thread.title,
        created_at=thread.created_at,
        updated_at=thread.updated_at,
        turns=turns,
    )


@router.delete("/threads/{thread_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_thread(thread_id: str, user: CurrentUser, services: ServicesDep) -> Response:
    """Delete a thread, its turns and its history."""
    if not await asyncio.to_thread(store.delete_thread, services.db, user.id, thread_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no thread {thread_id!r}")
    await services.checkpointer.adelete_thread(thread_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
