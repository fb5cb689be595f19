"""vLLM's legacy text completions route (``/v1/completions``): prompt in, text out.

Prompts are text or token ids; ids are checked against the vocabulary here, so a bad one
is that request's 400 and never reaches (or fails) a batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from backend.adapters import LoadedAdapter
from backend.engine import Engine, GenerationRequest
from backend.openai_schema import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
    new_id,
    now,
)
from backend.routes import STREAMED, V1_ERRORS, compile_grammar, resolve_model, sampling_params, sse
from backend.sampling import TokenDelta
from backend.server_state import APIError, StateDep, unless_client_gone

router = APIRouter()


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
async def completions(body: CompletionRequest, state: StateDep, request: Request) -> Any:
    """OpenAI (legacy) text completions: prompt in, text out."""
    engine = state.engine
    prompts = _completion_prompts(engine, body.prompt)
    if body.stream and len(prompts) > 1:
        raise APIError("Streaming supports one prompt per request; send one request each.", 400)
    adapters: list[LoadedAdapter | None] = []
    requests: list[GenerationRequest] = []
    try:
        for _ in prompts:
            adapters.append(resolve_model(state, body.model))
        grammar = await compile_grammar(engine, body)
        params_list = [
            sampling_params(
                state,
                body,
                len(p),
                body.max_tokens,
                body.logprobs is not None,
                body.logprobs or 0,
                grammar,
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
    return await unless_client_gone(
        request, _collect_completions(engine, requests, prompts, body, model)
    )


async def _collect_completions(
    engine: Engine,
    requests: list[GenerationRequest],
    prompts: list[list[int]],
    body: CompletionRequest,
    model: str,
) -> CompletionResponse:
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
        yield sse(event.model_dump_json(exclude_none=True))
    if body.stream_options is not None and body.stream_options.include_usage:
        usage = UsageInfo(
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            total_tokens=len(prompt_ids) + completion_tokens,
        )
        event = CompletionResponse(
            id=chunk_id, created=created, model=model, choices=[], usage=usage
        )
        yield sse(event.model_dump_json(exclude_none=True))
    yield sse("[DONE]")
