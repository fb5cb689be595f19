"""HTTP routes of the embedded server, mirroring vLLM's OpenAI-compatible API.

Status codes, error bodies and the LoRA admin messages are vLLM's, so a client written
against one works against the other: errors are ``{"error": {"message", "type", "param",
"code"}}``; invalid bodies are 400 (vLLM answers 400, not FastAPI's 422); an unknown model
is 404 ``The model `x` does not exist.``; the admin routes exist only when runtime LoRA
updating is enabled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, StreamingResponse

from backend.adapters import LoadedAdapter
from backend.engine import Engine, GenerationRequest
from backend.openai_schema import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatResponseMessage,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
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


def _resolve_model(state: ServerState, name: str | None) -> LoadedAdapter | None:
    """The adapter a request's ``model`` names (None = base), with a reference taken."""
    loaded = state.engine.loaded
    if name is None or name in loaded.request_names:
        return None
    version = state.engine.registry.acquire(name)
    if version is None:
        raise APIError(f"The model `{name}` does not exist.", 404)
    return version


def _sampling(
    state: ServerState,
    body: ChatCompletionRequest | CompletionRequest,
    prompt_len: int,
    max_tokens: int | None,
    logprobs: bool,
    top_logprobs: int,
    json_object: bool = False,
) -> SamplingParams:
    context = state.engine.loaded.max_context
    if max_tokens is None:
        max_tokens = context - prompt_len
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
        json_object=json_object,
        ignore_eos=body.ignore_eos,
    )


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


def _sse(payload: str) -> str:
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
async def chat_completions(body: ChatCompletionRequest, state: StateDep) -> Any:
    """OpenAI chat completions, streaming or not, on the base model or an adapter."""
    engine = state.engine
    adapter = _resolve_model(state, body.model)
    try:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            prompt_ids = engine.encode_chat(messages)
        except Exception as exc:  # the template is user-facing input validation
            raise APIError(f"Cannot apply the chat template to these messages: {exc}", 400) from exc
        json_object = body.response_format is not None and body.response_format.type != "text"
        params = _sampling(
            state,
            body,
            len(prompt_ids),
            body.max_completion_tokens or body.max_tokens,
            body.logprobs,
            body.top_logprobs or 0,
            json_object,
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
        return _sse(event.model_dump_json(exclude_none=True))

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
        yield _sse(
            json.dumps(
                ErrorResponse(
                    error=ErrorInfo(message=str(exc), type="InternalServerError", code=500)
                ).model_dump()
            )
        )
        yield _sse("[DONE]")
        return
    if body.stream_options is not None and body.stream_options.include_usage:
        usage = UsageInfo(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            total_tokens=len(prompt_ids) + completion_tokens,
        )
        yield chunk([], usage=usage)
    yield _sse("[DONE]")


def _completion_prompts(engine: Engine, prompt: Any) -> list[list[int]]:
    if isinstance(prompt, str):
        prompts = [engine.encode_text(prompt)]
    elif prompt and all(isinstance(p, str) for p in prompt):
        prompts = [engine.encode_text(p) for p in prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [_checked_ids(list(prompt), engine.vocab_size)]
    elif prompt and all(isinstance(p, list) for p in prompt):
        prompts = [_checked_ids(list(p), engine.vocab_size) for p in prompt]
    else:
        raise APIError("'prompt' must be a non-empty string, list of strings or token ids.", 400)
    if any(not p for p in prompts):
        raise APIError("The prompt is empty: send at least one token of text.", 400)
    return prompts


def _checked_ids(ids: list[int], vocab_size: int) -> list[int]:
    """Token ids the model has; a bad one is this request's 400, never its batch's 500."""
    bad = next((t for t in ids if isinstance(t, bool) or not 0 <= t < vocab_size), None)
    if bad is not None:
        raise APIError(
            f"Token id {bad} is out of vocabulary: ids must be integers in [0, {vocab_size}).",
            400,
        )
    return ids


@router.post(
    "/v1/completions", response_model=CompletionResponse, responses={**V1_ERRORS, **STREAMED}
)
async def completions(body: CompletionRequest, state: StateDep) -> Any:
    """OpenAI (legacy) text completions: prompt in, text out."""
    engine = state.engine
    prompts = _completion_prompts(engine, body.prompt)
    if body.stream and len(prompts) > 1:
        raise APIError("Streaming supports one prompt per request; send one request each.", 400)
    adapters: list[LoadedAdapter | None] = []
    requests: list[GenerationRequest] = []
    try:
        for _ in prompts:
            adapters.append(_resolve_model(state, body.model))
        params_list = [
            _sampling(
                state, body, len(p), body.max_tokens, body.logprobs is not None, body.logprobs or 0
            )
            for p in prompts
        ]
    except BaseException:
        for version in adapters:
            if version is not None:
                engine.registry.release(version)
        raise
    for prompt_ids, params, adapter in zip(prompts, params_list, adapters, strict=True):
        requests.append(engine.submit(prompt_ids, params, body.n, adapter))
    model = body.model or engine.loaded.served_name
    if body.stream:
        return StreamingResponse(
            _completion_stream(engine, requests[0], body, model, prompts[0]),
            media_type="text/event-stream",
        )
    choices: list[CompletionChoice] = []
    completion_tokens = 0
    for p, (prompt_ids, req) in enumerate(zip(prompts, requests, strict=True)):
        texts = [""] * body.n
        tokens: list[list[int]] = [[] for _ in range(body.n)]
        lps = [CompletionLogprobs() for _ in range(body.n)]
        finish: list[str | None] = [None] * body.n
        async for deltas in engine.results(req):
            for d in deltas:
                _add_completion_logprobs(lps[d.index], d, len(texts[d.index]))
                texts[d.index] += d.text
                tokens[d.index] += d.token_ids
                finish[d.index] = d.finish_reason or finish[d.index]
        completion_tokens += sum(len(t) for t in tokens)
        choices += [
            CompletionChoice(
                index=p * body.n + i,
                text=texts[i],
                logprobs=lps[i] if body.logprobs is not None else None,
                finish_reason=finish[i],
                token_ids=tokens[i] if body.return_token_ids else None,
                prompt_token_ids=prompt_ids if body.return_token_ids else None,
            )
            for i in range(body.n)
        ]
    prompt_tokens = sum(len(p) for p in prompts)
    return CompletionResponse(
        model=model,
        choices=choices,
        usage=UsageInfo(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
    )


def _add_completion_logprobs(out: CompletionLogprobs, delta: TokenDelta, offset: int) -> None:
    for lp in delta.logprobs:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({t: v for _, t, v in lp.top})
        out.text_offset.append(offset)


async def _completion_stream(
    engine: Engine,
    req: GenerationRequest,
    body: CompletionRequest,
    model: str,
    prompt_ids: list[int],
) -> AsyncIterator[str]:
    chunk_id, created = new_id("cmpl"), now()
    completion_tokens = 0
    async for deltas in engine.results(req):
        choices = []
        for d in deltas:
            completion_tokens += len(d.token_ids)
            lps = None
            if body.logprobs is not None:
                lps = CompletionLogprobs()
                _add_completion_logprobs(lps, d, 0)
            choices.append(
                CompletionChoice(
                    index=d.index,
                    text=d.text,
                    logprobs=lps,
                    finish_reason=d.finish_reason,
                    token_ids=d.token_ids if body.return_token_ids else None,
                )
            )
        event = CompletionResponse(id=chunk_id, created=created, model=model, choices=choices)
        yield _sse(event.model_dump_json(exclude_none=True))
    if body.stream_options is not None and body.stream_options.include_usage:
        usage = UsageInfo(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            total_tokens=len(prompt_ids) + completion_tokens,
        )
        event = CompletionResponse(
            id=chunk_id, created=created, model=model, choices=[], usage=usage
        )
        yield _sse(event.model_dump_json(exclude_none=True))
    yield _sse("[DONE]")
