"""The one way the rest of Flywheel talks to a model server (vLLM or the embedded one).

Built on the ``openai`` SDK for the OpenAI endpoints and httpx for vLLM's own routes
(``/health``, the LoRA admin calls), with one shared core (:mod:`backend.client_core`) and
two faces: :class:`AsyncModelClient` for the API and the agent, :class:`ModelClient` for
CLIs and the trainer. Failures come out as the typed errors of :mod:`backend.errors` so
callers can turn an unreachable server into a 503 without parsing messages. Only
connection failures are retried (with exponential backoff): a request the server answered,
even with an error, or one that timed out while generating, is never sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import openai
from typing_extensions import Unpack

from backend.client_core import (
    CALL_FAILURES,
    ChatOptions,
    ChatResult,
    ChatStream,
    ClientCore,
    Message,
    ModelInfo,
    SampledLogprob,
    Usage,
)
from backend.errors import ModelServerUnavailable

__all__ = [
    "AsyncChatStream",
    "AsyncModelClient",
    "ChatOptions",
    "ChatResult",
    "ChatStream",
    "Message",
    "ModelClient",
    "ModelInfo",
    "SampledLogprob",
    "SyncChatStream",
    "Usage",
]

T = TypeVar("T")


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


class AsyncModelClient(ClientCore):
    """Async client for the API and the agent (one per process; close it at shutdown)."""

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.openai = openai.AsyncOpenAI(**self._openai_options())
        self.http = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)

    async def aclose(self) -> None:
        """Close the connections."""
        await self.openai.close()
        await self.http.aclose()

    async def __aenter__(self) -> AsyncModelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, fn: Callable[[], Awaitable[T]], *, admin: bool = False) -> T:
        attempt = 0
        while True:
            try:
                return await fn()
            except CALL_FAILURES as exc:
                await asyncio.sleep(self._retry_delay(exc, attempt, admin))
                attempt += 1

    async def _create(self, kwargs: dict[str, Any]) -> list[ChatResult]:
        return self._results(
            await self._call(lambda: self.openai.chat.completions.create(**kwargs))
        )

    async def _get(self, url: str) -> httpx.Response:
        return await self._call(lambda: self.http.get(url))

    async def _admin(self, route: str, body: dict[str, Any]) -> str:
        url = f"{self.base_url}/{route}"
        response = await self._call(lambda: self.http.post(url, json=body), admin=True)
        return self._checked(response, admin=True).text

    async def chat(
        self, messages: list[Message], *, model: str | None = None, **kw: Unpack[ChatOptions]
    ) -> ChatResult:
        """One completion (see :meth:`ClientCore._chat_kwargs` for the sampling options)."""
        return (await self._create(self._chat_kwargs(messages, model=model, **kw)))[0]

    async def chat_samples(
        self,
        messages: list[Message],
        n: int,
        *,
        model: str | None = None,
        **kw: Unpack[ChatOptions],
    ) -> list[ChatResult]:
        """``n`` completions of the same prompt in one request (GRPO rollouts)."""
        return await self._create(self._chat_kwargs(messages, model=model, n=n, **kw))

    def stream_chat(
        self, messages: list[Message], *, model: str | None = None, **kw: Unpack[ChatOptions]
    ) -> AsyncChatStream:
        """Stream one completion: ``async for delta in stream``; then ``stream.usage``."""
        kwargs = self._stream_kwargs(messages, model=model, **kw)
        return AsyncChatStream(
            lambda: self._call(lambda: self.openai.chat.completions.create(**kwargs))
        )

    async def list_models(self) -> list[ModelInfo]:
        """The base model and the loaded adapters."""
        return self._models(await self._get(f"{self.base_url}/models"))

    async def load_adapter(self, name: str, path: str, inplace: bool = False) -> str:
        """Load a LoRA adapter under ``name`` (vLLM's runtime LoRA API); returns its message."""
        return await self._admin("load_lora_adapter", self._load_body(name, path, inplace))

    async def unload_adapter(self, name: str) -> str:
        """Unload the adapter served as ``name``; returns the server's message."""
        return await self._admin("unload_lora_adapter", {"lora_name": name})

    async def health(self) -> dict[str, Any]:
        """``/health`` (vLLM answers an empty 200: that reads as ``{"status": "ok"}``)."""
        return self._health(await self._get(f"{self.root_url}/health"))

    async def wait_until_ready(
        self, timeout: float = 120.0, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll ``/health`` until the server answers; raise ModelServerUnavailable on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                last = self._probe_failure(await self.http.get(f"{self.root_url}/health"))
            except httpx.TransportError as exc:
                last = self._probe_failure(exc)
            if last is None:
                return await self.health()
            if time.monotonic() >= deadline:
                raise self._not_ready(timeout, last)
            await asyncio.sleep(interval)


class ModelClient(ClientCore):
    """Blocking client for CLIs and the trainer (same API as :class:`AsyncModelClient`)."""

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.openai = openai.OpenAI(**self._openai_options())
        self.http = httpx.Client(timeout=self.timeout, headers=self.headers)

    def close(self) -> None:
        """Close the connections."""
        self.openai.close()
        self.http.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[[], T], *, admin: bool = False) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except CALL_FAILURES as exc:
                time.sleep(self._retry_delay(exc, attempt, admin))
                attempt += 1

    def _create(self, kwargs: dict[str, Any]) -> list[ChatResult]:
        return self._results(self._call(lambda: self.openai.chat.completions.create(**kwargs)))

    def _get(self, url: str) -> httpx.Response:
        return self._call(lambda: self.http.get(url))

    def _admin(self, route: str, body: dict[str, Any]) -> str:
        url = f"{self.base_url}/{route}"
        response = self._call(lambda: self.http.post(url, json=body), admin=True)
        return self._checked(response, admin=True).text

    def chat(
        self, messages: list[Message], *, model: str | None = None, **kw: Unpack[ChatOptions]
    ) -> ChatResult:
        """One completion; keyword options as in :meth:`AsyncModelClient.chat`."""
        return self._create(self._chat_kwargs(messages, model=model, **kw))[0]

    def chat_samples(
        self,
        messages: list[Message],
        n: int,
        *,
        model: str | None = None,
        **kw: Unpack[ChatOptions],
    ) -> list[ChatResult]:
        """``n`` completions of the same prompt in one request."""
        return self._create(self._chat_kwargs(messages, model=model, n=n, **kw))

    def stream_chat(
        self, messages: list[Message], *, model: str | None = None, **kw: Unpack[ChatOptions]
    ) -> SyncChatStream:
        """Stream one completion: ``for delta in stream``; then ``stream.usage``."""
        kwargs = self._stream_kwargs(messages, model=model, **kw)
        return SyncChatStream(
            lambda: self._call(lambda: self.openai.chat.completions.create(**kwargs))
        )

    def list_models(self) -> list[ModelInfo]:
        """The base model and the loaded adapters."""
        return self._models(self._get(f"{self.base_url}/models"))

    def load_adapter(self, name: str, path: str, inplace: bool = False) -> str:
        """Load a LoRA adapter under ``name``; returns the server's message."""
        return self._admin("load_lora_adapter", self._load_body(name, path, inplace))

    def unload_adapter(self, name: str) -> str:
        """Unload the adapter served as ``name``; returns the server's message."""
        return self._admin("unload_lora_adapter", {"lora_name": name})

    def health(self) -> dict[str, Any]:
        """``/health`` as a dict (``{"status": "ok"}`` for vLLM's empty answer)."""
        return self._health(self._get(f"{self.root_url}/health"))

    def wait_until_ready(self, timeout: float = 120.0, interval: float = 0.5) -> dict[str, Any]:
        """Poll ``/health`` until the server answers; raise ModelServerUnavailable on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                last = self._probe_failure(self.http.get(f"{self.root_url}/health"))
            except httpx.TransportError as exc:
                last = self._probe_failure(exc)
            if last is None:
                return self.health()
            if time.monotonic() >= deadline:
                raise self._not_ready(timeout, last)
            time.sleep(interval)
