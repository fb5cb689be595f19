"""The one way the rest of Flywheel talks to a model server (vLLM or the embedded one).

Built on the ``openai`` SDK for the OpenAI endpoints and httpx for vLLM's own routes
(``/health``, the LoRA admin calls), with one shared core and two faces:
:class:`AsyncModelClient` for the API and the agent, :class:`ModelClient` for CLIs and the
trainer. Failures come out as the typed errors of :mod:`backend.errors` so callers can
turn an unreachable server into a 503 without parsing messages. Only connection failures
are retried (with exponential backoff): a request the server answered, even with an
error, or one that timed out while generating, is never sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

import httpx
import openai
from typing_extensions import Unpack

from backend.errors import (
    AdapterNotFound,
    BadRequest,
    ModelNotFound,
    ModelServerError,
    ModelServerUnavailable,
)

T = TypeVar("T")
Message = dict[str, Any]


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
    return_token_ids: bool


@dataclass
class Usage:
    """Token counts reported by the server."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass
class TokenLogprob:
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
    logprobs: list[TokenLogprob] | None = None
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


class _ClientCore:
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
        api_key: str = "EMPTY",
    ) -> None:
        if base_url is None or model is None or timeout is None:
            from backend.settings import get_settings

            settings = get_settings()
            base_url = base_url or settings.base_url
            model = model or settings.model_name
            timeout = timeout or settings.request_timeout_s
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        self.model = model
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.timeout_s, self.connect_s = float(timeout), float(connect_timeout)
        self.retries = retries
        self.backoff = backoff
        self.api_key = api_key

    def _delay(self, attempt: int) -> float:
        return float(self.backoff * (2**attempt))

    def _unavailable(self, exc: Exception) -> ModelServerUnavailable:
        return ModelServerUnavailable(
            f"model server at {self.base_url} is unreachable ({type(exc).__name__}: {exc}); "
            "is it running? (make run, or check MODEL_SERVER_URL)"
        )

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
        return_token_ids: bool = False,
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
            "response_format": {"type": "json_object"} if json_object else None,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if return_token_ids:
            kwargs["extra_body"] = {"return_token_ids": True}
        return kwargs

    @staticmethod
    def _results(completion: Any) -> list[ChatResult]:
        usage = completion.usage
        results = []
        for choice in completion.choices:
            lps = None
            if choice.logprobs is not None and choice.logprobs.content is not None:
                lps = [
                    TokenLogprob(
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
    def _models(payload: dict[str, Any]) -> list[ModelInfo]:
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


class AsyncChatStream(ChatStream):
    """``async for delta in stream`` yields text pieces as the server produces them."""

    def __init__(self, opened: Callable[[], Awaitable[Any]]) -> None:
        super().__init__()
        self._opened = opened

    async def __aiter__(self) -> AsyncIterator[str]:
        stream = await self._opened()
        try:
            async for chunk in stream:
                delta = self._absorb(chunk)
                if delta:
                    yield delta
        except openai.APIConnectionError as exc:
            raise ModelServerUnavailable(f"stream interrupted: {exc}") from exc
        finally:
            await stream.close()


class SyncChatStream(ChatStream):
    """``for delta in stream`` yields text pieces as the server produces them."""

    def __init__(self, opened: Callable[[], Any]) -> None:
        super().__init__()
        self._opened = opened

    def __iter__(self) -> Iterator[str]:
        stream = self._opened()
        try:
            for chunk in stream:
                delta = self._absorb(chunk)
                if delta:
                    yield delta
        except openai.APIConnectionError as exc:
            raise ModelServerUnavailable(f"stream interrupted: {exc}") from exc
        finally:
            stream.close()


class AsyncModelClient(_ClientCore):
    """Async client for the API and the agent (one per process; close it at shutdown)."""

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.openai = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=openai.Timeout(self.timeout_s, connect=self.connect_s),
            max_retries=0,
        )
        self.http = httpx.AsyncClient(timeout=self.timeout)

    async def aclose(self) -> None:
        """Close the connections."""
        await self.openai.close()
        await self.http.aclose()

    async def __aenter__(self) -> AsyncModelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, fn: Callable[[], Awaitable[T]], *, admin: bool = False) -> T:
        for attempt in range(self.retries + 1):
            try:
                return await fn()
            except (openai.APITimeoutError, httpx.TimeoutException) as exc:
                raise self._unavailable(exc) from exc
            except (openai.APIConnectionError, httpx.TransportError) as exc:
                if attempt >= self.retries:
                    raise self._unavailable(exc) from exc
                await asyncio.sleep(self._delay(attempt))
            except openai.APIStatusError as exc:
                raise _status_error(exc.status_code, _message_of(exc), admin=admin) from exc
        raise AssertionError("unreachable")

    async def chat(
        self, messages: list[Message], *, model: str | None = None, **kw: Unpack[ChatOptions]
    ) -> ChatResult:
        """One completion (see :meth:`_ClientCore._chat_kwargs` for the sampling options)."""
        kwargs = self._chat_kwargs(messages, model=model, **kw)
        completion = await self._call(lambda: self.openai.chat.completions.create(**kwargs))
        return self._results(completion)[0]

    async def chat_samples(
        self,
        messages: list[Message],
        n: int,
        *,
        model: str | None = None,
        **kw: Unpack[ChatOptions],
    ) -> list[ChatResult]:
        """``n`` completions of the same prompt in one request (GRPO rollouts)."""
        kwargs = self._chat_kwargs(messages, model=model, n=n, **kw)
        completion = await self._call(lambda: self.openai.chat.completions.create(**kwargs))
        return self._results(completion)

    def stream_chat(
        self, messages: list[Message], *, model: str | None = None, **kw: Unpack[ChatOptions]
    ) -> AsyncChatStream:
        """Stream one completion: ``async for delta in stream``; then ``stream.usage``."""
        kwargs = self._chat_kwargs(messages, model=model, **kw)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        return AsyncChatStream(
            lambda: self._call(lambda: self.openai.chat.completions.create(**kwargs))
        )

    async def list_models(self) -> list[ModelInfo]:
        """The base model and the loaded adapters."""
        response = await self._call(lambda: self.http.get(f"{self.base_url}/models"))
        if response.status_code != 200:
            raise _http_error(response, admin=False)
        return self._models(response.json())

    async def load_adapter(self, name: str, path: str, inplace: bool = False) -> str:
        """Load a LoRA adapter under ``name`` (vLLM's runtime LoRA API); returns its message."""
        body = {"lora_name": name, "lora_path": str(path), "load_inplace": inplace}
        response = await self._call(
            lambda: self.http.post(f"{self.base_url}/load_lora_adapter", json=body), admin=True
        )
        if response.status_code != 200:
            raise _http_error(response, admin=True)
        return response.text

    async def unload_adapter(self, name: str) -> str:
        """Unload the adapter served as ``name``; returns the server's message."""
        response = await self._call(
            lambda: self.http.post(
                f"{self.base_url}/unload_lora_adapter", json={"lora_name": name}
            ),
            admin=True,
        )
        if response.status_code != 200:
            raise _http_error(response, admin=True)
        return response.text

    async def health(self) -> dict[str, Any]:
        """``/health`` (vLLM answers an empty 200: that reads as ``{"status": "ok"}``)."""
        response = await self._call(lambda: self.http.get(f"{self.root_url}/health"))
        if response.status_code != 200:
            raise _http_error(response, admin=False)
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        return payload if isinstance(payload, dict) and payload else {"status": "ok"}

    async def wait_until_ready(
        self, timeout: float = 120.0, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll ``/health`` until the server answers; raise ModelServerUnavailable on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = await self.http.get(f"{self.root_url}/health")
                if response.status_code == 200:
                    return await self.health()
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ModelServerUnavailable(
                    f"model server at {self.root_url} not ready after {timeout:.0f} s ({last})"
                )
            await asyncio.sleep(interval)


class ModelClient(_ClientCore):
    """Blocking client for CLIs and the trainer (same API as :class:`AsyncModelClient`)."""

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.openai = openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=openai.Timeout(self.timeout_s, connect=self.connect_s),
            max_retries=0,
        )
        self.http = httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        """Close the connections."""
        self.openai.close()
        self.http.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[[], T], *, admin: bool = False) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (openai.APITimeoutError, httpx.TimeoutException) as exc:
                raise self._unavailable(exc) from exc
            except (openai.APIConnectionError, httpx.TransportError) as exc:
                if attempt >= self.retries:
                    raise self._unavailable(exc) from exc
                time.sleep(self._delay(attempt))
            except openai.APIStatusError as exc:
                raise _status_error(exc.status_code, _message_of(exc), admin=admin) from exc
        raise AssertionError("unreachable")

    def chat(
        self, messages: list[Message], *, model: str | None = None, **kw: Unpack[ChatOptions]
    ) -> ChatResult:
        """One completion; keyword options as in :meth:`AsyncModelClient.chat`."""
        kwargs = self._chat_kwargs(messages, model=model, **kw)
        return self._results(self._call(lambda: self.openai.chat.completions.create(**kwargs)))[0]

    def chat_samples(
        self,
        messages: list[Message],
        n: int,
        *,
        model: str | None = None,
        **kw: Unpack[ChatOptions],
    ) -> list[ChatResult]:
        """``n`` completions of the same prompt in one request."""
        kwargs = self._chat_kwargs(messages, model=model, n=n, **kw)
        return self._results(self._call(lambda: self.openai.chat.completions.create(**kwargs)))

    def stream_chat(
        self, messages: list[Message], *, model: str | None = None, **kw: Unpack[ChatOptions]
    ) -> SyncChatStream:
        """Stream one completion: ``for delta in stream``; then ``stream.usage``."""
        kwargs = self._chat_kwargs(messages, model=model, **kw)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        return SyncChatStream(
            lambda: self._call(lambda: self.openai.chat.completions.create(**kwargs))
        )

    def list_models(self) -> list[ModelInfo]:
        """The base model and the loaded adapters."""
        response = self._call(lambda: self.http.get(f"{self.base_url}/models"))
        if response.status_code != 200:
            raise _http_error(response, admin=False)
        return self._models(response.json())

    def load_adapter(self, name: str, path: str, inplace: bool = False) -> str:
        """Load a LoRA adapter under ``name``; returns the server's message."""
        body = {"lora_name": name, "lora_path": str(path), "load_inplace": inplace}
        response = self._call(
            lambda: self.http.post(f"{self.base_url}/load_lora_adapter", json=body), admin=True
        )
        if response.status_code != 200:
            raise _http_error(response, admin=True)
        return response.text

    def unload_adapter(self, name: str) -> str:
        """Unload the adapter served as ``name``; returns the server's message."""
        response = self._call(
            lambda: self.http.post(
                f"{self.base_url}/unload_lora_adapter", json={"lora_name": name}
            ),
            admin=True,
        )
        if response.status_code != 200:
            raise _http_error(response, admin=True)
        return response.text

    def health(self) -> dict[str, Any]:
        """``/health`` as a dict (``{"status": "ok"}`` for vLLM's empty answer)."""
        response = self._call(lambda: self.http.get(f"{self.root_url}/health"))
        if response.status_code != 200:
            raise _http_error(response, admin=False)
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        return payload if isinstance(payload, dict) and payload else {"status": "ok"}

    def wait_until_ready(self, timeout: float = 120.0, interval: float = 0.5) -> dict[str, Any]:
        """Poll ``/health`` until the server answers; raise ModelServerUnavailable on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = self.http.get(f"{self.root_url}/health")
                if response.status_code == 200:
                    return self.health()
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ModelServerUnavailable(
                    f"model server at {self.root_url} not ready after {timeout:.0f} s ({last})"
                )
            time.sleep(interval)
