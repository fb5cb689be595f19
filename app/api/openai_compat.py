"""An OpenAI-compatible face of the agent, so the OpenAI SDK and chat front-ends work.

Each request is a new thread whose earlier messages are the history the client sends;
the sources are appended to the answer as a Markdown list.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import StreamingResponse

from app.agent.prompts import source_label
from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import AGENT_MODEL, ModelCard, ModelList, OpenAIChatRequest, error_responses
from app.store.records import SourceData
from app.turns import collect, start_turn

router = APIRouter(
    prefix="/v1", tags=["openai"], responses=error_responses(400, 401, 413, 422, 429, 503)
)


def sources_markdown(sources: list[SourceData]) -> str:
    """The cited sources as a Markdown list."""
    if not sources:
        return ""
    lines = [
        f"{s.get('number')}. {source_label(s, heading=False) or s.get('document_id', '')}"
        for s in sources
    ]
    return "\n\n**Sources**\n" + "\n".join(lines)


@router.get("/models", response_model=ModelList)
async def models(user: CurrentUser) -> ModelList:
    """The agent, as one model."""
    return ModelList(data=[ModelCard(id=AGENT_MODEL)])


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: OpenAIChatRequest, user: CurrentUser, services: ServicesDep
) -> dict[str, Any] | StreamingResponse:
    """Answer the last user message with the agent."""
    if body.messages[-1].role != "user" or not body.messages[-1].text().strip():
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "the last message must be a non-empty user message"
        )
    history = [
        {"role": m.role, "content": m.text()}
        for m in body.messages[:-1]
        if m.role in ("user", "assistant") and m.text()
    ]
    events = start_turn(
        services,
        user_id=user.id,
        question=body.messages[-1].text(),
        thread_id=None,
        collection=None,
        history=history,
    )
    completion_id, created = f"chatcmpl-{int(time.time() * 1000)}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": AGENT_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(payload)}\n\n"

    if body.stream:

        async def stream() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            async for event in events:
                if event.kind == "token":
                    yield chunk({"content": event.data["text"]})
                elif event.kind == "sources":
                    text = sources_markdown(event.data["sources"])
                    if text:
                        yield chunk({"content": text})
                elif event.kind == "error":
                    error = {"message": event.data["message"], "code": event.data.get("status")}
                    yield f"data: {json.dumps({'error': error})}\n\n"
            yield chunk({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    result = await collect(events)
    answer = result.answer + sources_markdown(result.sources)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": AGENT_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "flywheel": {"turn_id": result.turn_id},
    }
