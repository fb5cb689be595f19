"""Running one turn of the agent and turning it into events.

The graph runs in its own task and hands events over a queue, so a client that hangs up
mid-answer does not cancel the turn: it still finishes and is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, status

from app import metrics
from app.services import Services
from app.store.models import new_id
from app.store.threads import get_or_create_thread

logger = logging.getLogger(__name__)


@dataclass
class TurnEvent:
    """``token`` (text), ``sources`` (list), ``done`` (ids) or ``error`` (message, status)."""

    kind: str
    data: dict[str, Any]


def numbered_sources(final: dict[str, Any]) -> list[dict[str, Any]]:
    """Every source the answer was given, numbered as in the prompt, marked if cited."""
    cited = {s.get("number") for s in final.get("sources", [])}
    return [
        {**chunk, "number": n, "cited": n in cited}
        for n, chunk in enumerate(final.get("chunks", []), start=1)
    ]


async def start_turn(
    services: Services,
    *,
    user_id: str,
    question: str,
    thread_id: str | None,
    collection: str | None,
    history: list[dict[str, str]] | None = None,
) -> AsyncIterator[TurnEvent]:
    """Run the agent for ``question`` and yield its events; 404 for a thread not the user's."""
    turn_id = new_id()

    def prepare() -> tuple[Any, Any] | None:  # one thread hop for both lookups
        found = get_or_create_thread(services.db, user_id, thread_id, question[:80])
        if found is None:
            return None
        context = services.context(
            user_id=user_id, thread_id=found[0].id, turn_id=turn_id, collection=collection
        )
        return found[0], context

    prepared = await asyncio.to_thread(prepare)
    if prepared is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no thread {thread_id!r}")
    thread, context = prepared
    queue: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
    config = {"configurable": {"thread_id": thread.id}}
    graph_input: dict[str, Any] = {"question": question}
    if history:
        graph_input["messages"] = history

    async def run() -> None:
        start = time.perf_counter()
        final: dict[str, Any] = {}
        try:
            # Only the nodes' own events are streamed: the store node sends the finished
            # turn, which spares LangGraph a copy of the whole state after every step.
            async for event in services.graph.astream(
                graph_input,
                config,
                context=context,
                stream_mode="custom",
                durability="exit",  # one checkpoint write per turn, not one per node
            ):
                if event["event"] == "token":
                    queue.put_nowait(TurnEvent("token", {"text": event["text"]}))
                else:
                    final = event["turn"]
            metrics.observe_turn(final, time.perf_counter() - start)
            await queue.put(TurnEvent("sources", {"sources": numbered_sources(final)}))
            if final.get("error"):
                await queue.put(
                    TurnEvent(
                        "error",
                        {
                            "message": final["error"],
                            "status": 503,
                            "turn_id": turn_id,
                            "thread_id": thread.id,
                        },
                    )
                )
            else:
                await queue.put(
                    TurnEvent(
                        "done",
                        {
                            "turn_id": turn_id,
                            "thread_id": thread.id,
                            "answer": final.get("answer", ""),
                            "adapter_version": context.adapter_version,
                        },
                    )
                )
        except Exception as exc:  # report any failure to the client instead of hanging it
            logger.exception("turn %s failed", turn_id)
            await queue.put(
                TurnEvent(
                    "error",
                    {"message": f"the turn failed: {exc}", "status": 500, "thread_id": thread.id},
                )
            )
        finally:
            await queue.put(None)

    services.spawn(run())
    while (event := await queue.get()) is not None:
        yield event


async def collect(events: AsyncIterator[TurnEvent]) -> dict[str, Any]:
    """A whole answer from a turn's events: the ``done`` data with the ``sources``.

    An ``error`` event becomes the HTTP error it names (503 when the model server failed).
    """
    sources: list[dict[str, Any]] = []
    async for event in events:
        if event.kind == "sources":
            sources = event.data["sources"]
        elif event.kind == "done":
            return {**event.data, "sources": sources}
        elif event.kind == "error":
            raise HTTPException(event.data.get("status", 500), event.data["message"])
    raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, "the turn ended without an answer")
