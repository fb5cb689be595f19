"""Runtime LoRA on the embedded server: vLLM's admin calls, validation, and isolation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.backend.conftest import Server, make_adapter

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Hello, what is retrieval augmented generation?"}]


def chat(server: Server, model: str, max_tokens: int = 24) -> str:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        json={
            "model": model,
            "messages": MESSAGES,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def load(server: Server, name: str, path: Path | str, inplace: bool = False) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/load_lora_adapter",
        json={"lora_name": name, "lora_path": str(path), "load_inplace": inplace},
        timeout=120,
    )


def unload(server: Server, name: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/unload_lora_adapter", json={"lora_name": name})


def model_ids(server: Server) -> dict[str, str | None]:
    data = httpx.get(f"{server.base_url}/models").json()["data"]
    return {m["id"]: m["parent"] for m in data}


def test_lifecycle(server: Server, adapter_factory: Callable[..., Path]) -> None:
    path_a = adapter_factory("a", seed=1)
    path_b = adapter_factory("b", seed=2)
    base = chat(server, "tiny")

    response = load(server, "lora-a", path_a)
    assert response.status_code == 200
    assert response.text == "Success: LoRA adapter 'lora-a' added successfully."
    assert model_ids(server) == {"tiny": None, "lora-a": "tiny"}
    out_a = chat(server, "lora-a")
    assert out_a != base
    assert chat(server, "tiny") == base, "the base model is unchanged by loading an adapter"

    again = load(server, "lora-a", path_b)
    assert again.status_code == 400
    assert "has already been loaded" in again.json()["error"]["message"]
    assert chat(server, "lora-a") == out_a

    replaced = load(server, "lora-a", path_b, inplace=True)
    assert replaced.status_code == 200, replaced.text
    out_b = chat(server, "lora-a")
    assert out_b not in (out_a, base)

    missing = load(server, "lora-x", server.adapters_root / "does-not-exist")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFoundError"

    gone = unload(server, "lora-a")
    assert gone.status_code == 200
    assert gone.text == "Success: LoRA adapter 'lora-a' removed successfully."
    assert model_ids(server) == {"tiny": None}
    after = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "lora-a", "messages": MESSAGES, "max_tokens": 2},
    )
    assert after.status_code == 404
    assert after.json()["error"]["message"] == "The model `lora-a` does not exist."
    again_gone = unload(server, "lora-a")
    assert again_gone.status_code == 404
    assert "cannot be found" in again_gone.json()["error"]["message"]

    # a fresh name for the same files works again, with the same outputs as before
    assert load(server, "lora-a-v2", path_a).status_code == 200
    assert chat(server, "lora-a-v2") == out_a
    assert unload(server, "lora-a-v2").status_code == 200


def test_refusals_are_400_with_actionable_messages(
    server: Server, adapter_factory: Callable[..., Path], tmp_path: Path
) -> None:
    wrong_base = adapter_factory("wrong-base", seed=3, base_name="Qwen/Qwen2.5-7B-Instruct")
    response = load(server, "wb", wrong_base)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "Qwen/Qwen2.5-7B-Instruct" in message and "tiny" in message

    high_rank = adapter_factory("rank32", seed=4, rank=32)
    response = load(server, "r32", high_rank)
    assert response.status_code == 400
    assert "rank 32" in response.json()["error"]["message"]
    assert "MAX_LORA_RANK" in response.json()["error"]["message"]

    outside = make_adapter(server.model_path, tmp_path / "outside", seed=5)
    for path in (outside, f"{server.adapters_root}/../{outside.parent.name}/outside", "../x"):
        response = load(server, "out", path)
        assert response.status_code == 400, path
        assert "outside the adapters root" in response.json()["error"]["message"]
    link = server.adapters_root / "sneaky-link"
    if not link.exists():
        os.symlink(outside, link)
    response = load(server, "out", link)
    assert response.status_code == 400
    assert "outside the adapters root" in response.json()["error"]["message"]

    not_peft = server.adapters_root / "not-an-adapter"
    not_peft.mkdir(exist_ok=True)
    (not_peft / "notes.txt").write_text("hello")
    response = load(server, "np", not_peft)
    assert response.status_code == 400
    assert "not a peft adapter" in response.json()["error"]["message"]

    response = httpx.post(f"{server.base_url}/load_lora_adapter", json={"lora_name": "x"})
    assert response.status_code == 400
    assert "lora_path" in response.json()["error"]["message"]
    assert model_ids(server) == {"tiny": None}, "nothing refused got registered"


async def _stream(client: httpx.AsyncClient, model: str, started: asyncio.Event) -> list[str]:
    body = {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": 48,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    import json

    pieces: list[str] = []
    async with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:])["choices"]:
                pieces.append(choice["delta"].get("content") or "")
                if len(pieces) > 3:
                    started.set()
    return pieces


def test_isolation_under_concurrent_streams_and_reload(
    server: Server, adapter_factory: Callable[..., Path]
) -> None:
    path_a = adapter_factory("iso-a", seed=11)
    path_a2 = adapter_factory("iso-a2", seed=12)
    path_b = adapter_factory("iso-b", seed=13)
    assert load(server, "iso-a", path_a).status_code == 200
    assert load(server, "iso-b", path_b).status_code == 200
    solo = {m: chat(server, m, max_tokens=48) for m in ("tiny", "iso-a", "iso-b")}
    assert len(set(solo.values())) == 3

    async def scenario() -> tuple[dict[str, str], int]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            started = asyncio.Event()
            tasks = {
                key: asyncio.create_task(_stream(client, model, started))
                for key, model in [
                    ("tiny", "tiny"),
                    ("iso-a", "iso-a"),
                    ("iso-b", "iso-b"),
                    ("iso-a#2", "iso-a"),
                    ("tiny#2", "tiny"),
                ]
            }
            await started.wait()
            reload = await client.post(
                "/load_lora_adapter",
                json={"lora_name": "iso-a", "lora_path": str(path_a2), "load_inplace": True},
            )
            assert reload.status_code == 200, reload.text
            running = sum(not t.done() for t in tasks.values())
            pieces = {k: await t for k, t in tasks.items()}
            return {k: "".join(v) for k, v in pieces.items()}, running

    results, running_at_reload = asyncio.run(scenario())
    assert running_at_reload >= 3, "the reload should happen while the streams run"
    for key, text in results.items():
        assert text == solo[key.split("#")[0]], key
    # new requests on the reloaded name get the new weights
    a2 = chat(server, "iso-a", max_tokens=48)
    assert a2 != solo["iso-a"]
    assert load(server, "iso-a2-check", path_a2).status_code == 200
    assert chat(server, "iso-a2-check", max_tokens=48) == a2


def test_unload_mid_stream_finishes_on_the_old_weights(
    server: Server, adapter_factory: Callable[..., Path]
) -> None:
    path = adapter_factory("mid", seed=21)
    assert load(server, "mid", path).status_code == 200
    expected = chat(server, "mid", max_tokens=48)

    async def scenario() -> str:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            started = asyncio.Event()
            task = asyncio.create_task(_stream(client, "mid", started))
            await started.wait()
            assert (
                await client.post("/unload_lora_adapter", json={"lora_name": "mid"})
            ).status_code == 200
            assert not task.done()
            return "".join(await task)

    assert asyncio.run(scenario()) == expected
    assert "mid" not in model_ids(server)


def test_same_adapter_requests_are_batched(
    server: Server, adapter_factory: Callable[..., Path]
) -> None:
    path = adapter_factory("batch", seed=31)
    assert load(server, "batch", path).status_code == 200
    prompts = ["Hi", "What is the capital of France?", "Thank you! The quick brown fox jumps."]

    def body(prompt: str) -> dict[str, object]:
        return {
            "model": "batch",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 16,
            "temperature": 0,
            "ignore_eos": True,
        }

    solo = [
        httpx.post(f"{server.base_url}/chat/completions", json=body(p), timeout=60).json()
        for p in prompts
    ]
    before = httpx.get(f"{server.root_url}/metrics").text

    async def together() -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post("/chat/completions", json=body(p)) for p in prompts)
            )
            return [r.json() for r in responses]

    batched = asyncio.run(together())
    for s, b in zip(solo, batched, strict=True):
        assert b["choices"][0]["message"]["content"] == s["choices"][0]["message"]["content"]  # type: ignore[index]
    after = httpx.get(f"{server.root_url}/metrics").text
    assert _metric(after, "flywheel_max_batch_rows") >= 2
    passes = _metric(after, "flywheel_forward_passes_total") - _metric(
        before, "flywheel_forward_passes_total"
    )
    assert passes < 3 * 16, "three concurrent requests on one adapter should share forward passes"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")
