"""``POST /chat``: the agent, streamed as server-sent events or answered whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import ChatRequest, ChatResponse, Source, error_responses
from app.turns import TurnEvent, collect, start_turn

router = APIRouter(tags=["chat"], responses=error_responses(401, 404, 413, 422, 429, 503))


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
    result = await collect(_chain(first, events))
    return ChatResponse(
        answer=result.answer,
        sources=[Source.model_validate(s) for s in result.sources],
        turn_id=result.turn_id,
        thread_id=result.thread_id,
    )


async def _chain(first: TurnEvent, rest: AsyncIterator[TurnEvent]) -> AsyncIterator[TurnEvent]:
    yield first
    async for event in rest:
        yield event
