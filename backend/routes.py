"""HTTP routes of the embedded server, mirroring vLLM's OpenAI-compatible API.

Status codes, error bodies and the LoRA admin messages are vLLM's, so a client written
against one works against the other: errors are ``{"error": {"message", "type", "param",
"code"}}``; invalid bodies are 400 (vLLM answers 400, not FastAPI's 422); an unknown model
is 404 ``The model `x` does not exist.``; the admin routes exist only when runtime LoRA
updating is enabled.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from backend.adapters import LoadedAdapter
from backend.engine import Engine, GenerationRequest
from backend.grammar import GrammarError
from backend.openai_schema import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatResponseMessage,
    ChatTokenLogprob,
    CompletionRequest,
    DeltaMessage,
    ErrorInfo,
    ErrorResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    TopLogprob,
    UsageInfo,
    new_id,
    now,
)
from backend.sampling import SamplingParams, TokenDelta
from backend.server_state import (
    APIError,
    ServerState,
    StateDep,
    documented_errors,
    unless_client_gone,
)

logger = logging.getLogger(__name__)

router = APIRouter()
# Routes under /v1 answer these errors; /health and /metrics never do.
V1_ERRORS = documented_errors(400, 401, 404)


# ---- helpers ---------------------------------------------------------------------------


# With "stream": true the same routes answer server-sent events: chunks, then [DONE].
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {
                "schema": {
                    "description": "One event: a JSON chunk in 'data', or '[DONE]' last.",
                    "type": "object",
                    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                    "required": ["data"],
                }
            }
        }
    },
}


def resolve_model(state: ServerState, name: str | None) -> LoadedAdapter | None:
    """The adapter a request's ``model`` names (None = base), with a reference taken."""
    loaded = state.engine.loaded
    if name is None or name in loaded.request_names:
        return None
    version = state.engine.registry.acquire(name)
    if version is None:
        raise APIError(f"The model `{name}` does not exist.", 404)
    return version


def sampling_params(
    state: ServerState,
    body: ChatCompletionRequest | CompletionRequest,
    prompt_len: int,
    max_tokens: int | None,
    logprobs: bool,
    top_logprobs: int,
    grammar: Any = None,
) -> SamplingParams:
    """The engine's sampling parameters of a request; 400 when it cannot fit the context."""
    context = state.engine.loaded.max_context
    if max_tokens is None:
        max_tokens = context - prompt_len
    if body.min_tokens > max_tokens:
        raise APIError(
            f"min_tokens ({body.min_tokens}) must be less than or equal to max_tokens "
            f"({max_tokens}).",
            400,
        )
    if prompt_len + max_tokens > context:
        raise APIError(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_len + max_tokens} tokens ({prompt_len} in the messages, {max_tokens} in "
            "the completion). Please reduce the length of the messages or completion.",
            400,
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        ignore_eos=body.ignore_eos,
        min_tokens=body.min_tokens,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        grammar=grammar,
    )


async def compile_grammar(engine: Engine, body: ChatCompletionRequest | CompletionRequest) -> Any:
    """The compiled grammar the request's output must follow, or None."""
    try:
        spec = body.grammar_spec()
        return None if spec is None else await asyncio.to_thread(engine.grammars.compile, spec)
    except GrammarError as exc:
        raise APIError(str(exc), 400) from exc


def _chat_logprobs(delta: TokenDelta) -> list[ChatTokenLogprob]:
    return [
        ChatTokenLogprob(
            token=lp.token,
            logprob=lp.logprob,
            bytes=list(lp.token.encode()),
            top_logprobs=[
                TopLogprob(token=t, logprob=v, bytes=list(t.encode())) for _, t, v in lp.top
            ],
        )
        for lp in delta.logprobs
    ]


def sse(payload: str) -> str:
    """One server-sent event carrying ``payload``."""
    return f"data: {payload}\n\n"


# ---- routes ----------------------------------------------------------------------------


@router.get("/health", response_model=HealthResponse)
async def health(state: StateDep) -> HealthResponse:
    """Liveness and which model is served.

    ``fallback`` when the configured model could not be loaded and another one answers;
    ``demo_model`` when that one is the tiny random model.
    """
    loaded = state.engine.loaded
    return HealthResponse(
        model=loaded.served_name, demo_model=loaded.demo, fallback=loaded.fallback
    )


_METRICS = {
    "forward_passes": ("flywheel_forward_passes_total", "counter", "Forward passes run."),
    "generated_tokens": ("flywheel_generated_tokens_total", "counter", "Tokens generated."),
    "max_batch_rows": ("flywheel_max_batch_rows", "gauge", "Largest batch decoded so far."),
}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: StateDep) -> str:
    """Engine counters in Prometheus' text format (vLLM serves its own on /metrics too)."""
    lines = []
    stats = {**state.engine.stats, "adapters_loaded": len(state.engine.registry.names())}
    for key, value in stats.items():
        name, kind, help_text = _METRICS.get(
            key, (f"flywheel_{key}", "gauge", "LoRA adapters served.")
        )
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"


@router.get("/v1/models", response_model=ModelList, responses=documented_errors(401))
async def list_models(state: StateDep) -> ModelList:
    """The base model, then each loaded adapter with ``parent`` = the base model."""
    loaded = state.engine.loaded
    cards = [ModelCard(id=loaded.served_name, root=loaded.source, max_model_len=loaded.max_context)]
    cards += [
        ModelCard(
            id=v.name,
            root=str(v.spec.path),
            parent=loaded.served_name,
            max_model_len=loaded.max_context,
        )
        for v in state.engine.registry.names()
    ]
    return ModelList(data=cards)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={**V1_ERRORS, **STREAMED},
)
async def chat_completions(body: ChatCompletionRequest, state: StateDep, request: Request) -> Any:
    """OpenAI chat completions, streaming or not, on the base model or an adapter."""
    engine = state.engine
    adapter = resolve_model(state, body.model)
    try:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            prompt_ids = engine.encode_chat(messages)
        except Exception as exc:  # the template is user-facing input validation
            raise APIError(f"Cannot apply the chat template to these messages: {exc}", 400) from exc
        grammar = await compile_grammar(engine, body)
        params = sampling_params(
            state,
            body,
            len(prompt_ids),
            body.max_completion_tokens or body.max_tokens,
            body.logprobs,
            body.top_logprobs or 0,
            grammar,
        )
    except BaseException:
        if adapter is not None:
            engine.registry.release(adapter)
        raise
    req = engine.submit(prompt_ids, params, body.n, adapter)
    model = body.model or engine.loaded.served_name
    if body.stream:
        return StreamingResponse(
            _chat_stream(engine, req, body, model, prompt_ids), media_type="text/event-stream"
        )
    return await unless_client_gone(request, _collect_chat(engine, req, body, model, prompt_ids))


async def _collect_chat(
    engine: Engine,
    req: GenerationRequest,
    body: ChatCompletionRequest,
    model: str,
    prompt_ids: list[int],
) -> ChatCompletionResponse:
    n = body.n
    texts = [""] * n
    tokens: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[ChatTokenLogprob]] = [[] for _ in range(n)]
    finish: list[str | None] = [None] * n
    async for deltas in engine.results(req):
        for d in deltas:
            texts[d.index] += d.text
            tokens[d.index] += d.token_ids
            logprobs[d.index] += _chat_logprobs(d)
            finish[d.index] = d.finish_reason or finish[d.index]
    completion_tokens = sum(len(t) for t in tokens)
    return ChatCompletionResponse(
        model=model,
        choices=[
            ChatChoice(
                index=i,
                message=ChatResponseMessage(content=texts[i]),
                logprobs=ChatLogprobs(content=logprobs[i]) if body.logprobs else None,
                finish_reason=finish[i],
                token_ids=tokens[i] if body.return_token_ids else None,
            )
            for i in range(n)
        ],
        usage=UsageInfo(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            total_tokens=len(prompt_ids) + completion_tokens,
        ),
        prompt_token_ids=prompt_ids if body.return_token_ids else None,
    )


async def _chat_stream(
    engine: Engine,
    req: GenerationRequest,
    body: ChatCompletionRequest,
    model: str,
    prompt_ids: list[int],
) -> AsyncIterator[str]:
    chunk_id, created = new_id("chatcmpl"), now()

    def chunk(choices: list[ChatChunkChoice], **extra: Any) -> str:
        event = ChatCompletionChunk(
            id=chunk_id, created=created, model=model, choices=choices, **extra
        )
        return sse(event.model_dump_json(exclude_none=True))

    first = [
        ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
        for i in range(body.n)
    ]
    yield chunk(first, prompt_token_ids=prompt_ids if body.return_token_ids else None)
    completion_tokens = 0
    try:
        async for deltas in engine.results(req):
            choices = []
            for d in deltas:
                completion_tokens += len(d.token_ids)
                quiet = not (body.logprobs or body.return_token_ids)
                if not d.text and d.finish_reason is None and quiet:
                    continue
                choices.append(
                    ChatChunkChoice(
                        index=d.index,
                        delta=DeltaMessage(content=d.text),
                        logprobs=ChatLogprobs(content=_chat_logprobs(d)) if body.logprobs else None,
                        finish_reason=d.finish_reason,
                        token_ids=d.token_ids if body.return_token_ids else None,
                    )
                )
            if choices:
                yield chunk(choices)
    except Exception as exc:
        logger.exception("stream failed")
        yield sse(
            json.dumps(
                ErrorResponse(
                    error=ErrorInfo(message=str(exc), type="InternalServerError", code=500)
                ).model_dump()
            )
        )
        yield sse("[DONE]")
        return
    if body.stream_options is not None and body.stream_options.include_usage:
        usage = UsageInfo(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            total_tokens=len(prompt_ids) + completion_tokens,
        )
        yield chunk([], usage=usage)
    yield sse("[DONE]")
