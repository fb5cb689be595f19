"""The project's model client (sync and async) against the embedded server, and its errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backend.client import AsyncModelClient, ModelClient
from backend.errors import (
    AdapterNotFound,
    BadRequest,
    ModelNotFound,
    ModelServerError,
    ModelServerUnavailable,
)
from tests.backend.conftest import Server
from tests.conftest import free_port

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server: Server) -> ModelClient:
    return ModelClient(server.base_url, model="tiny", timeout=60)


def test_chat_returns_text_usage_logprobs_and_token_ids(client: ModelClient) -> None:
    result = client.chat(
        MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, return_token_ids=True
    )
    assert result.text
    assert result.model == "tiny"
    assert result.finish_reason in {"stop", "length"}
    assert result.usage is not None
    assert result.token_ids is not None and len(result.token_ids) == result.usage.completion_tokens
    assert result.prompt_token_ids is not None
    assert len(result.prompt_token_ids) == result.usage.prompt_tokens
    assert result.logprobs is not None and len(result.logprobs) == result.usage.completion_tokens
    assert all(len(t.top) <= 2 and t.logprob <= 0 for t in result.logprobs)


def test_penalties_and_schemas_reach_the_server(client: ModelClient) -> None:
    def ids(**options: Any) -> list[int]:
        result = client.chat(
            MESSAGES, max_tokens=12, temperature=0, return_token_ids=True, **options
        )
        assert result.token_ids is not None
        return result.token_ids

    plain = ids()
    assert ids(frequency_penalty=2.0) != plain  # an OpenAI field
    with pytest.raises(BadRequest, match="repetition_penalty"):  # vLLM's, sent beside them
        client.chat(MESSAGES, max_tokens=4, repetition_penalty=5.0)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    shaped = client.chat(MESSAGES, max_tokens=30, temperature=0, json_schema=schema)
    assert isinstance(json.loads(shaped.text)["ok"], bool)


def test_samples_and_streaming(client: ModelClient) -> None:
    samples = client.chat_samples(MESSAGES, 3, max_tokens=8, temperature=1.0, seed=7)
    assert len(samples) == 3
    assert [s.text for s in samples] == [
        s.text for s in client.chat_samples(MESSAGES, 3, max_tokens=8, temperature=1.0, seed=7)
    ]
    whole = client.chat(MESSAGES, max_tokens=16, temperature=0)
    stream = client.stream_chat(MESSAGES, max_tokens=16, temperature=0)
    deltas = list(stream)
    assert "".join(deltas) == whole.text == stream.text
    assert len(deltas) > 1
    assert stream.usage is not None and stream.usage == whole.usage
    assert stream.finish_reason == whole.finish_reason


def test_adapter_admin_and_typed_errors(
    client: ModelClient, server: Server, adapter_factory: Callable[..., Path]
) -> None:
    path = adapter_factory("client-a", seed=41)
    assert "added successfully" in client.load_adapter("client-a", str(path))
    assert {(m.id, m.parent) for m in client.list_models()} == {
        ("tiny", None),
        ("client-a", "tiny"),
    }
    with pytest.raises(BadRequest, match="already been loaded"):
        client.load_adapter("client-a", str(path))
    assert "added successfully" in client.load_adapter("client-a", str(path), inplace=True)
    assert client.chat(MESSAGES, model="client-a", max_tokens=4).text is not None
    with pytest.raises(AdapterNotFound):
        client.load_adapter("ghost", str(server.adapters_root / "ghost"))
    with pytest.raises(BadRequest, match="outside the adapters root"):
        client.load_adapter("evil", "/etc")
    assert "removed successfully" in client.unload_adapter("client-a")
    with pytest.raises(AdapterNotFound, match="cannot be found"):
        client.unload_adapter("client-a")
    with pytest.raises(ModelNotFound, match="does not exist"):
        client.chat(MESSAGES, model="client-a", max_tokens=4)
    with pytest.raises(BadRequest, match="maximum context length"):
        client.chat(MESSAGES, max_tokens=10**6)
    assert client.health()["status"] == "ok"


def test_async_client(server: Server, adapter_factory: Callable[..., Path]) -> None:
    path = adapter_factory("async-a", seed=42)

    async def run() -> None:
        async with AsyncModelClient(server.base_url, model="tiny", timeout=60) as aclient:
            assert (await aclient.wait_until_ready(timeout=5))["model"] == "tiny"
            whole = await aclient.chat(MESSAGES, max_tokens=12, temperature=0)
            stream = aclient.stream_chat(MESSAGES, max_tokens=12, temperature=0)
            pieces = [d async for d in stream]
            assert "".join(pieces) == whole.text
            assert stream.usage is not None and stream.usage.completion_tokens >= 1
            samples = await aclient.chat_samples(MESSAGES, 2, max_tokens=4, temperature=1.0)
            assert len(samples) == 2
            await aclient.load_adapter("async-a", str(path))
            assert "async-a" in {m.id for m in await aclient.list_models()}
            adapted = await aclient.chat(MESSAGES, model="async-a", max_tokens=12, temperature=0)
            assert adapted.text != whole.text
            await aclient.unload_adapter("async-a")
            with pytest.raises(ModelNotFound):
                await aclient.chat(MESSAGES, model="async-a", max_tokens=2)

    asyncio.run(run())


def test_server_down_is_unavailable_quickly() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    client = ModelClient(dead, model="tiny", timeout=5, retries=2, backoff=0.05)
    calls: list[Callable[[], object]] = [
        lambda: client.chat(MESSAGES, max_tokens=2),
        lambda: list(client.stream_chat(MESSAGES, max_tokens=2)),
        client.list_models,
        client.health,
        lambda: client.load_adapter("a", "/x"),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(ModelServerUnavailable, match="unreachable"):
            call()
        assert time.monotonic() - started < 2.0
    started = time.monotonic()
    with pytest.raises(ModelServerUnavailable, match="not ready"):
        client.wait_until_ready(timeout=0.5, interval=0.1)
    assert time.monotonic() - started < 2.0
    assert issubclass(ModelServerUnavailable, ModelServerError)

    async def run_async() -> None:
        async with AsyncModelClient(dead, model="tiny", timeout=5, backoff=0.05) as aclient:
            with pytest.raises(ModelServerUnavailable):
                await aclient.chat(MESSAGES, max_tokens=2)
            with pytest.raises(ModelServerUnavailable):
                async for _ in aclient.stream_chat(MESSAGES, max_tokens=2):
                    pass
            with pytest.raises(ModelServerUnavailable):
                await aclient.wait_until_ready(timeout=0.3, interval=0.1)

    asyncio.run(run_async())
