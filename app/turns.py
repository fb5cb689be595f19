"""Running one turn of the agent and turning it into events.

The graph runs in its own task and hands events over a queue, so a client that hangs up
mid-answer does not cancel the turn: it still finishes and is stored. This module knows
nothing of HTTP: it raises its own errors, which the routes turn into status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig

from app import metrics
from app.agent.context import Context
from app.services import Services
from app.store.models import Thread, new_id
from app.store.records import SourceData, TurnRecord, numbered_sources
from app.store.threads import get_or_create_thread

logger = logging.getLogger(__name__)


class ThreadNotFound(LookupError):
    """The thread does not exist or is not the caller's."""


class TurnFailed(RuntimeError):
    """The turn ended in an error; ``status`` is the HTTP status it stands for."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class TurnEvent:
    """``token`` (text), ``sources`` (list), ``done`` (ids) or ``error`` (message, status)."""

    kind: Literal["token", "sources", "done", "error"]
    data: dict[str, Any]


@dataclass
class TurnOutcome:
    """A whole answer: what a non-streaming client gets."""

    answer: str
    sources: list[SourceData]
    turn_id: str
    thread_id: str
    adapter_version: str | None = None


def _final_events(record: TurnRecord, thread_id: str, adapter: str | None) -> list[TurnEvent]:
    """The events that close a turn: its numbered sources, then ``done`` or ``error``."""
    sources = TurnEvent("sources", {"sources": numbered_sources(record.retrieved, record.sources)})
    ids = {"turn_id": record.id, "thread_id": thread_id}
    if record.error:
        return [sources, TurnEvent("error", {"message": record.error, "status": 503, **ids})]
    done = {**ids, "answer": record.answer, "adapter_version": adapter}
    return [sources, TurnEvent("done", done)]


async def _run_graph(
    services: Services,
    graph_input: dict[str, Any],
    thread: Thread,
    context: Context,
    queue: asyncio.Queue[TurnEvent | None],
) -> None:
    """Run the graph, putting its events on ``queue`` and None when it is over."""
    start = time.perf_counter()
    config: RunnableConfig = {"configurable": {"thread_id": thread.id}}
    record: TurnRecord | None = None
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
                record = event["turn"]
        if record is None:
            raise RuntimeError("the agent finished without storing the turn")
        metrics.observe_turn(record, time.perf_counter() - start)
        for closing in _final_events(record, thread.id, context.adapter_version):
            await queue.put(closing)
    except Exception as exc:  # report any failure to the client instead of hanging it
        logger.exception("turn %s failed", context.turn_id)
        failure = {"message": f"the turn failed: {exc}", "status": 500, "thread_id": thread.id}
        await queue.put(TurnEvent("error", failure))
    finally:
        await queue.put(None)


async def start_turn(
    services: Services,
    *,
    user_id: str,
    question: str,
    thread_id: str | None,
    collection: str | None,
    history: list[dict[str, str]] | None = None,
) -> AsyncIterator[TurnEvent]:
    """Run the agent for ``question`` and yield its events.

    Raises:
        ThreadNotFound: ``thread_id`` is not one of the user's threads.
    """
    turn_id = new_id()

    def prepare() -> tuple[Thread, Context] | None:  # one thread hop for both lookups
        found = get_or_create_thread(services.db, user_id, thread_id, question[:80])
        if found is None:
            return None
        context = services.context(
            user_id=user_id, thread_id=found[0].id, turn_id=turn_id, collection=collection
        )
        return found[0], context

    prepared = await asyncio.to_thread(prepare)
    if prepared is None:
        raise ThreadNotFound(f"no thread {thread_id!r}")
    thread, context = prepared
    queue: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
    graph_input: dict[str, Any] = {"question": question}
    if history:
        graph_input["messages"] = history
    services.spawn(_run_graph(services, graph_input, thread, context, queue))
    while (event := await queue.get()) is not None:
        yield event


async def collect(events: AsyncIterator[TurnEvent]) -> TurnOutcome:
    """A whole answer from a turn's events: the ``done`` data with the ``sources``.

    Raises:
        TurnFailed: on an ``error`` event (503 when the model server failed).
    """
    sources: list[SourceData] = []
    async for event in events:
        if event.kind == "sources":
            sources = event.data["sources"]
        elif event.kind == "done":
            data = event.data
            return TurnOutcome(
                answer=data["answer"],
                sources=sources,
                turn_id=data["turn_id"],
                thread_id=data["thread_id"],
                adapter_version=data.get("adapter_version"),
            )
        elif event.kind == "error":
            raise TurnFailed(event.data["message"], event.data.get("status", 500))
    raise TurnFailed("the turn ended without an answer", 500)
