"""The real small model, SmolLM2-135M-Instruct, through the embedded server as users meet it.

The fast tests use the tiny random model; these prove what only a real model can: the
chat template and stop tokens are right (an answer ends on its own, without the template's
markers), streaming carries the same words, a LoRA trained one step changes the answers
at runtime and unloading restores them, and it knows the capital of France.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backend.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smol(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded server on SmolLM2, served as ``smollm2``."""
    data_dir = tmp_path_factory.mktemp("smol-data")
    srv = start_server(
        smollm2_model,
        tmp_path_factory.mktemp("smol-adapters"),
        data_dir,
        "--served-model-name",
        "smollm2",
        "--threads",
        "1",
    )
    yield srv
    stop_server(srv)


def chat(server: Server, model: str = "smollm2", max_tokens: int = 40, **extra: object) -> dict:
    body = {
        "model": model,
        "messages": QUESTION,
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_chat_template_renders_chatml(smollm2_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_model)
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    # Token ids survive a save and reload of the converted folder.
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_answers_the_capital_of_france_and_stops_by_itself(smol: Server) -> None:
    body = chat(smol, max_tokens=60)
    choice = body["choices"][0]
    assert "Paris" in choice["message"]["content"]
    # The stop token ended it, well before the cap, and never shows in the text.
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < 60
    assert "<|im_end|>" not in choice["message"]["content"]
    assert "<|im_start|>" not in choice["message"]["content"]


def test_min_tokens_holds_the_end_of_an_answer_back(smol: Server) -> None:
    alone = chat(smol, max_tokens=60)["usage"]["completion_tokens"]
    held = chat(smol, max_tokens=80, min_tokens=alone + 10)
    # vLLM's min_tokens: the stop token is masked until then, so the answer goes on.
    assert held["usage"]["completion_tokens"] >= alone + 10
    assert held["choices"][0]["message"]["content"].startswith(
        chat(smol, max_tokens=60)["choices"][0]["message"]["content"].rstrip()[:20]
    )
    wrong = httpx.post(
        f"{smol.base_url}/chat/completions",
        json={"model": "smollm2", "messages": QUESTION, "max_tokens": 5, "min_tokens": 10},
        timeout=60,
    )
    assert wrong.status_code == 400 and "min_tokens" in wrong.text


def test_streaming_carries_the_same_answer(smol: Server) -> None:
    whole = chat(smol)["choices"][0]["message"]["content"]
    body = {"model": "smollm2", "messages": QUESTION, "max_tokens": 40, "temperature": 0}
    pieces: list[str] = []
    finish = None
    with httpx.stream(
        "POST", f"{smol.base_url}/chat/completions", json={**body, "stream": True}, timeout=120
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            pieces.append(choice["delta"].get("content") or "")
            finish = choice.get("finish_reason") or finish
    assert len([p for p in pieces if p]) > 3  # it came in pieces, not at once
    assert "".join(pieces) == whole
    assert finish == "stop"


def _train_one_step(model_dir: Path, out: Path) -> None:
    """One optimiser step of a LoRA on SmolLM2 towards a made-up answer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, config)
    messages = [*QUESTION, {"role": "assistant", "content": "Banana banana banana banana."}]
    ids = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    loss = peft_model(**ids, labels=ids["input_ids"]).loss
    loss.backward()
    optimizer.step()
    peft_model.save_pretrained(out)


def test_a_lora_trained_one_step_changes_answers_and_unloading_restores_them(
    smol: Server,
) -> None:
    base = chat(smol)["choices"][0]["message"]["content"]
    adapter = smol.adapters_root / "one-step"
    _train_one_step(smol.model_path, adapter)
    loaded = httpx.post(
        f"{smol.base_url}/load_lora_adapter",
        json={"lora_name": "one-step-v1", "lora_path": str(adapter)},
        timeout=60,
    )
    assert loaded.status_code == 200, loaded.text
    tuned = chat(smol, model="one-step-v1")["choices"][0]["message"]["content"]
    assert tuned != base
    assert chat(smol)["choices"][0]["message"]["content"] == base  # base unaffected
    unloaded = httpx.post(
        f"{smol.base_url}/unload_lora_adapter", json={"lora_name": "one-step-v1"}, timeout=60
    )
    assert unloaded.status_code == 200
    gone = httpx.post(
        f"{smol.base_url}/chat/completions",
        json={"model": "one-step-v1", "messages": QUESTION, "max_tokens": 4},
        timeout=60,
    )
    assert gone.status_code == 404
    assert chat(smol)["choices"][0]["message"]["content"] == base
