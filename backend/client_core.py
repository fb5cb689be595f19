"""What the blocking and the async model clients share, written once.

:mod:`backend.client` has two faces, :class:`~backend.client.ModelClient` and
:class:`~backend.client.AsyncModelClient`, that differ only in how they wait. Everything
else lives here: configuration, building requests, reading answers into plain dataclasses,
turning failures into the typed errors of :mod:`backend.errors`, and the retry rule (only
connection failures are retried; a request the server answered, or one that timed out
while generating, is never sent twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

import httpx
import openai

from backend.errors import (
    AdapterNotFound,
    BadRequest,
    ModelNotFound,
    ModelServerError,
    ModelServerUnavailable,
)

Message = dict[str, Any]

# Timeouts first: ``openai.APITimeoutError`` is also an ``APIConnectionError``.
_TIMEOUTS = (openai.APITimeoutError, httpx.TimeoutException)
_CONNECTION_FAILURES = (openai.APIConnectionError, httpx.TransportError)
CALL_FAILURES = (*_CONNECTION_FAILURES, openai.APIStatusError)


class ChatOptions(TypedDict, total=False):
    """Sampling options of a chat call (OpenAI's names; None = the server's default)."""

    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: str | list[str] | None
    seed: int | None
    logprobs: bool
    top_logprobs: int | None
    json_object: bool
    json_schema: dict[str, Any] | None
    return_token_ids: bool
    frequency_penalty: float | None
    presence_penalty: float | None
    repetition_penalty: float | None
    min_tokens: int | None


@dataclass
class Usage:
    """Token counts reported by the server."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass
class SampledLogprob:
    """A generated token's log-probability and its top alternatives (token → logprob)."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class ChatResult:
    """One completed choice."""

    text: str
    finish_reason: str | None
    model: str
    usage: Usage | None = None
    logprobs: list[SampledLogprob] | None = None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None


@dataclass
class ModelInfo:
    """An entry of ``/v1/models``: the base model (``parent`` None) or an adapter."""

    id: str
    parent: str | None = None
    root: str | None = None


def _message_of(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(exc.message)


def _status_error(status: int, message: str, *, admin: bool = False) -> ModelServerError:
    if status == 404:
        return (AdapterNotFound if admin else ModelNotFound)(message, status)
    if status in (400, 422):
        return BadRequest(message, status)
    if status in (502, 503, 504):
        return ModelServerUnavailable(message, status)
    return ModelServerError(message, status)


def _http_error(response: httpx.Response, *, admin: bool) -> ModelServerError:
    try:
        body = response.json()
        inner = body.get("error", body) if isinstance(body, dict) else {}
        message = str(inner.get("message") or inner.get("detail") or response.text)
    except ValueError:
        message = response.text
    return _status_error(response.status_code, message, admin=admin)


class ClientCore:
    """Configuration and request/response translation shared by both clients."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str | None = None,
        timeout: float | None = None,
        connect_timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.25,
        api_key: str | None = None,
    ) -> None:
        if base_url is None or model is None or timeout is None or api_key is None:
            from backend.settings import get_settings

            settings = get_settings()
            base_url = base_url or settings.base_url
            model = model or settings.model_name
            timeout = timeout or settings.request_timeout_s
            api_key = settings.vllm_api_key if api_key is None else api_key
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        self.model = model
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.timeout_s, self.connect_s = float(timeout), float(connect_timeout)
        self.retries = retries
        self.backoff = backoff
        # The openai client insists on a key; "EMPTY" is vLLM's convention for none.
        self.api_key = api_key or "EMPTY"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _openai_options(self) -> dict[str, Any]:
        """Keyword arguments of the ``openai`` client: our timeouts, and no retries of its own."""
        return {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "timeout": openai.Timeout(self.timeout_s, connect=self.connect_s),
            "max_retries": 0,
        }

    def _retry_delay(self, exc: Exception, attempt: int, admin: bool) -> float:
        """Seconds to wait before sending again after ``exc``; raises when not to retry.

        Raises:
            ModelServerError: the typed error for ``exc`` (a timeout, an answer, or a
                connection failure on the last attempt).
        """
        if isinstance(exc, _TIMEOUTS):
            raise self._unavailable(exc) from exc
        if isinstance(exc, openai.APIStatusError):
            raise _status_error(exc.status_code, _message_of(exc), admin=admin) from exc
        if attempt >= self.retries:
            raise self._unavailable(exc) from exc
        return float(self.backoff * (2**attempt))

    def _unavailable(self, exc: Exception) -> ModelServerUnavailable:
        return ModelServerUnavailable(
            f"model server at {self.base_url} is unreachable ({type(exc).__name__}: {exc}); "
            "is it running? (make run, or check MODEL_SERVER_URL)"
        )

    def _not_ready(self, timeout: float, last: str) -> ModelServerUnavailable:
        return ModelServerUnavailable(
            f"model server at {self.root_url} not ready after {timeout:.0f} s ({last})"
        )

    @staticmethod
    def _probe_failure(response: httpx.Response | httpx.TransportError) -> str | None:
        """Why a ``/health`` probe says "not ready" (None: ready)."""
        if isinstance(response, httpx.TransportError):
            return f"{type(response).__name__}: {response}"
        return None if response.status_code == 200 else f"HTTP {response.status_code}"

    @staticmethod
    def _checked(response: httpx.Response, *, admin: bool = False) -> httpx.Response:
        """``response`` if it is a 200, else the typed error it stands for."""
        if response.status_code != 200:
            raise _http_error(response, admin=admin)
        return response

    @staticmethod
    def _health(response: httpx.Response) -> dict[str, Any]:
        """``/health`` as a dict (vLLM answers an empty 200: that reads as ``{"status": "ok"}``)."""
        ClientCore._checked(response)
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        return payload if isinstance(payload, dict) and payload else {"status": "ok"}

    @staticmethod
    def _load_body(name: str, path: str, inplace: bool) -> dict[str, Any]:
        return {"lora_name": name, "lora_path": str(path), "load_inplace": inplace}

    def _chat_kwargs(
        self,
        messages: list[Message],
        *,
        model: str | None,
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        json_object: bool = False,
        json_schema: dict[str, Any] | None = None,
        return_token_ids: bool = False,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repetition_penalty: float | None = None,
        min_tokens: int | None = None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": model or self.model, "messages": messages}
        optional = {
            "n": n if n != 1 else None,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "stop": stop,
            "seed": seed,
            "logprobs": True if logprobs else None,
            "top_logprobs": top_logprobs if logprobs else None,
            "response_format": _response_format(json_object, json_schema),
            "frequency_penalty": frequency_penalty,
            "presence_penalty": presence_penalty,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        # vLLM's own parameters travel in the body beside OpenAI's.
        extra: dict[str, Any] = {
            "return_token_ids": True if return_token_ids else None,
            "repetition_penalty": repetition_penalty,
            "min_tokens": min_tokens,
        }
        if any(v is not None for v in extra.values()):
            kwargs["extra_body"] = {k: v for k, v in extra.items() if v is not None}
        return kwargs

    def _stream_kwargs(self, messages: list[Message], **kw: Any) -> dict[str, Any]:
        kwargs = self._chat_kwargs(messages, **kw)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        return kwargs

    @staticmethod
    def _results(completion: Any) -> list[ChatResult]:
        usage = completion.usage
        results = []
        for choice in completion.choices:
            lps = None
            if choice.logprobs is not None and choice.logprobs.content is not None:
                lps = [
                    SampledLogprob(
                        t.token, t.logprob, {a.token: a.logprob for a in t.top_logprobs or []}
                    )
                    for t in choice.logprobs.content
                ]
            results.append(
                ChatResult(
                    text=choice.message.content or "",
                    finish_reason=choice.finish_reason,
                    model=completion.model,
                    usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
                    if usage
                    else None,
                    logprobs=lps,
                    token_ids=getattr(choice, "token_ids", None),
                    prompt_token_ids=getattr(completion, "prompt_token_ids", None),
                )
            )
        return results

    @staticmethod
    def _models(response: httpx.Response) -> list[ModelInfo]:
        payload = ClientCore._checked(response).json()
        return [
            ModelInfo(id=m["id"], parent=m.get("parent"), root=m.get("root"))
            for m in payload.get("data", [])
        ]


class ChatStream:
    """Text deltas of one streamed chat completion; ``usage`` and the rest once it ends."""

    def __init__(self) -> None:
        self.text = ""
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None

    def _absorb(self, chunk: Any) -> str:
        self.model = chunk.model
        if chunk.usage is not None:
            u = chunk.usage
            self.usage = Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
        delta = ""
        for choice in chunk.choices:
            delta += choice.delta.content or ""
            self.finish_reason = choice.finish_reason or self.finish_reason
        self.text += delta
        return delta


def _response_format(json_object: bool, json_schema: dict[str, Any] | None) -> Any:
    """OpenAI's ``response_format``: JSON following a schema, any JSON object, or free text."""
    if json_schema is not None:
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": json_schema}}
    return {"type": "json_object"} if json_object else None
