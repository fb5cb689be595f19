"""``POST /chat``: the agent, streamed as server-sent events or answered whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import ChatRequest, ChatResponse, Source
from app.turns import TurnEvent, start_turn

router = APIRouter(tags=["chat"])


def sse(event: TurnEvent) -> str:
    """One server-sent event."""
    return f"event: {event.kind}\ndata: {json.dumps(event.data)}\n\n"


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 404: {}, 503: {}},
)
async def chat(
    body: ChatRequest, user: CurrentUser, services: ServicesDep
) -> ChatResponse | StreamingResponse:
    """Ask the agent. Streams ``token`` events, then ``sources``, then ``done`` (or ``error``)."""
    events = start_turn(
        services,
        user_id=user.id,
        question=body.message,
        thread_id=body.thread_id,
        collection=body.collection,
    )
    first = await anext(events)  # raises the thread's 404 before any byte is sent
    if body.stream:

        async def body_stream() -> AsyncIterator[str]:
            yield sse(first)
            async for event in events:
                yield sse(event)

        return StreamingResponse(
            body_stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    answer, sources, ids, error = "", [], {}, None
    async for event in _chain(first, events):
        if event.kind == "token":
            answer += event.data["text"]
        elif event.kind == "sources":
            sources = event.data["sources"]
        elif event.kind == "done":
            ids, answer = event.data, event.data["answer"]
        elif event.kind == "error":
            raise HTTPException(event.data.get("status", 500), event.data["message"])
    return ChatResponse(
        answer=answer,
        sources=[Source.model_validate(s) for s in sources],
        turn_id=ids["turn_id"],
        thread_id=ids["thread_id"],
        error=error,
    )


async def _chain(first: TurnEvent, rest: AsyncIterator[TurnEvent]) -> AsyncIterator[TurnEvent]:
    yield first
    async for event in rest:
        yield event
