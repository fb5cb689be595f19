"""The unmodified openai SDK against the embedded server, plus malformed requests."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from tests.backend.conftest import Server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=60)


def test_health_and_models(server: Server, sdk: openai.OpenAI) -> None:
    health = httpx.get(f"{server.root_url}/health").json()
    assert health == {"status": "ok", "model": "tiny", "demo_model": False, "fallback": False}
    models = sdk.models.list().data
    assert [m.id for m in models] == ["tiny"]


def test_chat_usage_and_token_ids(sdk: openai.OpenAI) -> None:
    out = sdk.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        extra_body={"return_token_ids": True, "ignore_eos": True},
    )
    choice = out.choices[0]
    assert out.object == "chat.completion"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert out.usage is not None
    assert out.usage.completion_tokens == 12
    prompt_ids = out.model_extra["prompt_token_ids"]  # type: ignore[index]
    assert out.usage.prompt_tokens == len(prompt_ids) > 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + 12
    assert len(choice.model_extra["token_ids"]) == 12  # type: ignore[index]


def test_greedy_is_deterministic_and_streaming_matches(sdk: openai.OpenAI) -> None:
    kwargs = {"model": "tiny", "messages": MESSAGES, "max_tokens": 20, "temperature": 0.0}
    first = sdk.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    second = sdk.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    assert first == second
    stream = sdk.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[call-overload]
    pieces, finish, usage = [], None, None
    for chunk in stream:
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            finish = c.finish_reason or finish
        usage = chunk.usage or usage
    assert "".join(pieces) == first
    assert finish in {"stop", "length"}
    assert usage is not None and usage.completion_tokens >= 1


def test_stream_ends_with_done(server: Server) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_n_samples_with_seed_reproduce(sdk: openai.OpenAI) -> None:
    kwargs = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 10,
        "temperature": 1.0,
        "n": 3,
        "seed": 1234,
    }
    a = [c.message.content for c in sdk.chat.completions.create(**kwargs).choices]  # type: ignore[call-overload]
    b = [c.message.content for c in sdk.chat.completions.create(**kwargs).choices]  # type: ignore[call-overload]
    assert len(a) == 3
    assert a == b
    assert len(set(a)) > 1, "the n samples should differ from each other"
    other = sdk.chat.completions.create(**{**kwargs, "seed": 99})  # type: ignore[call-overload]
    assert [c.message.content for c in other.choices] != a


def test_logprobs_shapes(sdk: openai.OpenAI) -> None:
    out = sdk.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 6 == out.usage.completion_tokens  # type: ignore[union-attr]
    for token in content:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)
        assert [t.logprob for t in token.top_logprobs] == sorted(
            (t.logprob for t in token.top_logprobs), reverse=True
        )


def test_stop_and_max_completion_tokens(sdk: openai.OpenAI) -> None:
    base = sdk.chat.completions.create(
        model="tiny", messages=MESSAGES, max_completion_tokens=15, temperature=0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    text = base.choices[0].message.content or ""
    assert base.usage.completion_tokens == 15  # type: ignore[union-attr]
    assert len(text) > 3
    stop = text[2:4]
    cut = sdk.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=15, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_streamed_stop_matches_the_non_streamed_cut(sdk: openai.OpenAI) -> None:
    kwargs = {"model": "tiny", "messages": MESSAGES, "max_tokens": 15, "temperature": 0.0}
    text = sdk.chat.completions.create(**kwargs, extra_body={"ignore_eos": True})  # type: ignore[call-overload]
    full = text.choices[0].message.content or ""
    stop = full[5:8]
    whole = sdk.chat.completions.create(**kwargs, stop=stop)  # type: ignore[call-overload]
    streamed = "".join(
        c.delta.content or ""
        for chunk in sdk.chat.completions.create(**kwargs, stop=stop, stream=True)  # type: ignore[call-overload]
        for c in chunk.choices
    )
    assert streamed == whole.choices[0].message.content == full[: full.index(stop)]
    assert stop not in streamed


def test_completions_endpoint(sdk: openai.OpenAI) -> None:
    out = sdk.completions.create(
        model="tiny", prompt="The capital of France is", max_tokens=5, temperature=0,
        logprobs=2, extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert out.object == "text_completion"
    assert out.usage is not None and out.usage.completion_tokens == 5
    assert out.choices[0].logprobs is not None
    assert len(out.choices[0].logprobs.tokens or []) == 5


def test_unknown_model_is_404_like_vllm(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        sdk.chat.completions.create(model="nope", messages=MESSAGES, max_tokens=2)
    assert "The model `nope` does not exist." in str(err.value)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"model": "tiny", "messages": [', "not valid JSON"),
        (b'{"model": "tiny"}', "messages"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}',
         "max_tokens"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 100000}', "n:"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], '
         b'"max_tokens": 999999}',
         "maximum context length"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_with_a_message(server: Server, body: bytes, needle: str) -> None:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and error["type"] == "BadRequestError"
    assert needle in error["message"]
    # and the server keeps serving
    ok = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "tiny", "messages": MESSAGES, "max_tokens": 2},
        timeout=60,
    )
    assert ok.status_code == 200


def test_admin_routes_absent_when_runtime_updating_is_off(tiny_chat_model: Path) -> None:
    from fastapi.testclient import TestClient

    from backend.engine import Engine
    from backend.models import load_model
    from backend.server_app import create_app

    engine = Engine(load_model(str(tiny_chat_model), "tiny", "cpu", "float32"))
    app = create_app(engine, adapters_root=tiny_chat_model, max_lora_rank=16, runtime_lora=False)
    with TestClient(app) as client:
        body = {"lora_name": "a", "lora_path": "x"}
        assert client.post("/v1/load_lora_adapter", json=body).status_code == 404
        assert client.post("/v1/unload_lora_adapter", json={"lora_name": "a"}).status_code == 404
        assert client.get("/health").json()["model"] == "tiny"


def test_penalties_break_a_greedy_loop(server: Server) -> None:
    def tokens(**penalty: float) -> list[int]:
        body = {
            "model": "tiny",
            "prompt": "The quick brown fox",
            "max_tokens": 12,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
            **penalty,
        }
        response = httpx.post(f"{server.base_url}/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return list(response.json()["choices"][0]["token_ids"])

    plain = tokens()
    assert len(set(plain)) <= 3, "the random model loops on a token or two"
    assert tokens(frequency_penalty=0.0, repetition_penalty=1.0) == plain  # neutral values
    for penalty in (
        {"frequency_penalty": 2.0},
        {"presence_penalty": 2.0},
        {"repetition_penalty": 2.0},
    ):
        assert len(set(tokens(**penalty))) > len(set(plain)), penalty
    refused = httpx.post(
        f"{server.base_url}/completions",
        json={"model": "tiny", "prompt": "x", "frequency_penalty": 3.0},
        timeout=60,
    )
    assert refused.status_code == 400
