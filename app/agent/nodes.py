"""The graph's nodes. Each is async, reads the state and context, returns what it changes.

A failing model or memory never loses the turn: the error is recorded in the state and the
turn is still stored, so the user gets an error event and the trainer sees what happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import aclosing
from dataclasses import asdict, is_dataclass
from typing import Any, Literal, cast

from langgraph.runtime import Runtime

from app.agent import prompts
from app.agent.citations import (
    attach_citations,
    cited_sources,
    drop_dangling,
    grounded_claims,
)
from app.agent.context import Context
from app.agent.evidence import weigh
from app.agent.loops import LoopGuard, cut_loop, drop_repeated_sentences
from app.agent.state import Message, State
from app.agent.understanding import SMALL_TALK, is_personal_statement, parse_understanding
from app.store.records import ChunkData, SourceData, TurnRecord, says_not_in_documents
from backend.errors import ModelServerError

logger = logging.getLogger(__name__)

# Greetings and thanks need no search; anything else goes to retrieval unless the model
# (with history) says otherwise.


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _record(item: Any) -> dict[str, Any]:
    """A JSON-ready dict from a dataclass, pydantic model or mapping."""
    if isinstance(item, dict):
        return dict(item)
    if is_dataclass(item) and not isinstance(item, type):
        return asdict(item)
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        return dict(dump(mode="json"))
    return dict(vars(item))


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(record, default=str))


async def _ask_json(
    ctx: Context, system: str, user: str, schema: tuple[str, dict[str, Any]], max_tokens: int
) -> str:
    """One greedy reply decoded under ``schema`` (name, JSON schema): a small structured step."""
    name, body = schema
    return await ctx.llm.complete(
        [{"role": "system", "content": system}, {"role": "user", "content": user}],
        model=ctx.model,
        temperature=0.0,
        max_tokens=max_tokens,
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": body}},
    )


async def recall(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Start a turn: clear the last turn's fields and recall the user's memories."""
    ctx, start = runtime.context, time.perf_counter()
    memories: list[dict[str, Any]] = []
    if ctx.memory is not None and ctx.memory_k > 0 and state.question.strip():
        # Memory's recall never raises: a failing search is logged there and gives [].
        found = await asyncio.to_thread(
            ctx.memory.recall, ctx.user_id, state.question, ctx.memory_k
        )
        memories = [_jsonable(_record(m)) for m in found]
    return {
        "memories": memories,
        "standalone_query": state.question,
        "route": "retrieve",
        "sub_queries": [],
        "chunks": [],
        "evidence": None,
        "supported": False,
        "prompt": [],
        "answer": "",
        "sources": [],
        "usage": {},
        "error": None,
        "timings": {"recall_ms": _ms(start)},
    }


async def understand(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Make the question stand alone using the history, and decide whether to search."""
    ctx, start = runtime.context, time.perf_counter()
    timings = {**state.timings}
    if SMALL_TALK.match(state.question) or is_personal_statement(state.question):
        timings["understand_ms"] = _ms(start)
        return {"route": "direct", "standalone_query": state.question, "timings": timings}
    history = state.messages[-ctx.history_messages :] if ctx.history_messages else []
    if not history:  # a first question stands alone already: save a model call
        timings["understand_ms"] = _ms(start)
        return {"route": "retrieve", "standalone_query": state.question, "timings": timings}
    conversation = "\n".join(f"{m['role']}: {m['content']}" for m in history)
    try:
        raw = await _ask_json(
            ctx,
            prompts.UNDERSTAND_SYSTEM,
            f"Conversation:\n{conversation}\n\nLast message: {state.question}",
            ("understanding", prompts.UNDERSTAND_SCHEMA),
            max_tokens=200,
        )
    except ModelServerError as exc:
        logger.warning("query rewrite failed, searching with the question as asked: %s", exc)
        raw = ""
    standalone, route, subs = parse_understanding(raw, state.question)
    timings["understand_ms"] = _ms(start)
    return {"standalone_query": standalone, "route": route, "sub_queries": subs, "timings": timings}


def after_understand(state: State) -> Literal["retrieve", "generate"]:
    """Search the documents, or answer directly."""
    return "generate" if state.route == "direct" else "retrieve"


async def retrieve(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Search the user's documents for each query and merge the results by chunk."""
    ctx, start = runtime.context, time.perf_counter()
    queries = state.sub_queries or [state.standalone_query or state.question]
    best: dict[str, dict[str, Any]] = {}
    if ctx.retriever is not None:
        for query in queries:
            results = await asyncio.to_thread(
                ctx.retriever.search,
                query,
                owner=ctx.user_id,
                collection=ctx.collection,
                k=ctx.top_k,
            )
            for result in results:
                chunk = _jsonable(_record(result))
                key = str(chunk.get("chunk_id"))
                if key not in best or chunk.get("score", 0) > best[key].get("score", 0):
                    best[key] = chunk
    ranked = sorted(best.values(), key=lambda c: c.get("score", 0.0), reverse=True)
    kept = [c for c in ranked if c.get("score", 0.0) >= ctx.min_relevance][: ctx.top_k]
    chunks = cast(list[ChunkData], kept)
    question = state.standalone_query or state.question
    weight, supported = weigh(question, chunks, ctx.min_evidence)
    if supported and ctx.passage_check and chunks:
        supported = await passage_answers(ctx, question, chunks[0])
    return {
        "chunks": chunks,
        "evidence": weight,
        "supported": supported,
        "timings": {**state.timings, "retrieve_ms": _ms(start)},
    }


async def passage_answers(ctx: Context, question: str, chunk: ChunkData) -> bool:
    """The model's constrained yes/no on whether ``chunk`` answers ``question``.

    A failing model server or an unreadable reply counts as yes: the check only ever
    withholds an answer on a clear no.
    """
    try:
        raw = await _ask_json(
            ctx,
            prompts.PASSAGE_CHECK_SYSTEM,
            prompts.passage_check_message(question, chunk),
            ("passage_check", prompts.PASSAGE_CHECK_SCHEMA),
            max_tokens=20,
        )
    except ModelServerError as exc:
        logger.warning("passage check failed, answering anyway: %s", exc)
        return True
    try:
        verdict = json.loads(raw).get("answers")
    except (ValueError, AttributeError):
        verdict = None
    return verdict != "no"


def after_retrieve(state: State) -> Literal["generate", "not_found"]:
    """Answer from the sources, or decline when none bears on the question."""
    return "generate" if state.supported else "not_found"


async def not_found(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Say that the documents do not answer this, instead of inventing an answer."""
    reply = prompts.NOT_SUPPORTED if state.chunks else prompts.NOT_FOUND
    runtime.stream_writer({"event": "token", "text": reply})
    return {
        "answer": reply,
        "sources": [],
        "timings": {**state.timings, "generate_ms": 0.0},
    }


def build_prompt(state: State, ctx: Context) -> list[Message]:
    """The exact messages the answer is generated from."""
    # The user's data goes in the user turn, fenced and labelled as data: in the system
    # message a document's text would carry the authority of the instructions (LLM01).
    system = prompts.ANSWER_SYSTEM if state.chunks else prompts.DIRECT_SYSTEM
    history = state.messages[-ctx.history_messages :] if ctx.history_messages else []
    question = prompts.user_message(state.question, state.chunks, state.memories)
    return [
        {"role": "system", "content": system},
        *({"role": m["role"], "content": m["content"]} for m in history),
        {"role": "user", "content": question},
    ]


async def generate(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stream the answer token by token, then map its citations to sources."""
    ctx, start = runtime.context, time.perf_counter()
    prompt = build_prompt(state, ctx)
    usage: dict[str, int] = {}
    error: str | None = None
    first_token_ms: float | None = None
    looped: int | None = None
    guard = LoopGuard()  # holds the answer's text as it streams
    try:
        async with aclosing(ctx.llm.stream(prompt, model=ctx.model, **ctx.sampling)) as deltas:
            async for delta in deltas:
                if delta.text:
                    if first_token_ms is None:
                        first_token_ms = _ms(start)
                    runtime.stream_writer({"event": "token", "text": delta.text})
                    looped = guard.add(delta.text)
                    if looped is not None:
                        break  # closing the stream stops the server generating it
                if delta.prompt_tokens is not None:
                    usage["prompt_tokens"] = delta.prompt_tokens
                if delta.completion_tokens is not None:
                    usage["completion_tokens"] = delta.completion_tokens
    except ModelServerError as exc:
        error = f"model server failed while answering: {exc}"
        logger.error("turn %s: %s", ctx.turn_id, error)
    answer = guard.text  # the whole answer as streamed
    if looped is not None:
        logger.info("turn %s: the answer started to loop; it was stopped", ctx.turn_id)
        answer = cut_loop(answer, looped)
    clean, sources = with_citations(answer, state.chunks, attach=error is None)
    if not sources and state.chunks and not error and not says_not_in_documents(clean):
        if ctx.retry_unsupported:
            clean, sources = await retry_unsupported(prompt, state.chunks, ctx, clean)
        if not sources and ctx.decline_ungrounded and grounded_claims(clean):
            # Nothing the answer says is in the sources: a made-up answer, not an answer.
            logger.info("turn %s: no source supports the answer; declining", ctx.turn_id)
            clean = prompts.NOT_SUPPORTED
    timings = {**state.timings, "generate_ms": _ms(start)}
    if first_token_ms is not None:
        timings["first_token_ms"] = first_token_ms
    return {
        "prompt": prompt,
        "answer": clean,
        "sources": sources,
        "usage": usage,
        "error": error,
        "timings": timings,
    }


def with_citations(
    answer: str, chunks: list[ChunkData], *, attach: bool = True
) -> tuple[str, list[SourceData]]:
    """The finished answer and its sources: the model's own ``[n]``, else attached ones."""
    clean = drop_dangling(drop_repeated_sentences(answer), len(chunks))
    sources = cited_sources(clean, chunks)
    if attach and not sources and chunks and not says_not_in_documents(clean):
        # Small models seldom write [n]; the user still learns where each claim comes from.
        clean, sources = attach_citations(clean, chunks)
    return clean, sources


async def retry_unsupported(
    prompt: list[Message], chunks: list[ChunkData], ctx: Context, first: str
) -> tuple[str, list[SourceData]]:
    """Ask once more for an answer no source supports; keep it only if one supports it.

    A small model sometimes opens with a false start ("The answer is:") or an answer of
    its own invention. A second sample (another seed) is often a real answer from the
    sources. It is not streamed: the ``done`` event carries the answer that counts.
    """
    if ctx.sampling.get("temperature") == 0:
        return first, []  # greedy decoding would say the same again
    sampling = {**ctx.sampling, "seed": int(ctx.sampling.get("seed") or 0) + 1}
    try:
        text = await ctx.llm.complete(prompt, model=ctx.model, **sampling)
    except ModelServerError as exc:
        logger.warning("turn %s: the retry of an unsupported answer failed: %s", ctx.turn_id, exc)
        return first, []
    looped = LoopGuard().add(text, final=True)
    if looped is not None:
        text = cut_loop(text, looped)
    clean, sources = with_citations(text, chunks)
    if sources:
        logger.info("turn %s: the first answer had no support; the retry has", ctx.turn_id)
        return clean, sources
    return first, []


async def remember(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Hand the finished exchange to memory, off the request path."""
    ctx = runtime.context
    if ctx.memory is None or state.error or not state.answer:
        return {}
    exchange = [
        {"role": "user", "content": state.question},
        {"role": "assistant", "content": state.answer},
    ]
    # Queued on memory's own worker, bounded by its timeout; it never raises.
    ctx.memory.remember_in_background(ctx.user_id, exchange, thread_id=ctx.thread_id)
    return {}


async def store(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write the turn whole, and add the exchange to the thread's history."""
    ctx = runtime.context
    stages = (v for k, v in state.timings.items() if k != "first_token_ms")  # nested in generate
    timings = {**state.timings, "total_ms": round(sum(stages), 3)}
    record = TurnRecord(
        id=ctx.turn_id,
        thread_id=ctx.thread_id,
        user_id=ctx.user_id,
        collection=ctx.collection,
        question=state.question,
        standalone_query=state.standalone_query,
        route=state.route,
        messages=state.prompt,
        retrieved=state.chunks,
        memories=state.memories,
        answer=state.answer,
        sources=state.sources,
        model=ctx.base_model,
        adapter_version=ctx.adapter_version,
        arm=ctx.arm,
        sampling={**ctx.sampling},
        timings=timings,
        prompt_tokens=state.usage.get("prompt_tokens"),
        completion_tokens=state.usage.get("completion_tokens"),
        error=state.error,
    )
    if ctx.save_turn is not None:
        start = time.perf_counter()
        await asyncio.to_thread(ctx.save_turn, record)
        timings["store_ms"] = _ms(start)
    history: list[Message] = [{"role": "user", "content": state.question}]
    if state.answer:
        history.append({"role": "assistant", "content": state.answer})
    runtime.stream_writer({"event": "turn", "turn": record})
    return {"messages": history, "timings": timings}
