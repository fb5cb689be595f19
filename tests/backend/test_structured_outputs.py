"""Structured outputs: the same request bodies as vLLM, decoded under an xgrammar grammar.

Even the random-weight tiny model must produce valid output: the grammar, not the
model, guarantees the shape. Bodies use OpenAI's ``response_format`` and vLLM's own
``structured_outputs`` / ``guided_*`` fields, as sent to vLLM's OpenAI server.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.backend.conftest import Server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Should I look this up in the documents?"}]
ROUTE = {
    "type": "object",
    "properties": {
        "route": {"enum": ["retrieve", "chat"]},
        "confident": {"type": "boolean"},
    },
    "required": ["route", "confident"],
    "additionalProperties": False,
}


def chat(server: Server, **body: Any) -> httpx.Response:
    payload = {"model": "tiny", "messages": MESSAGES, "max_tokens": 40, "temperature": 0, **body}
    return httpx.post(f"{server.base_url}/chat/completions", json=payload, timeout=120)


def test_json_schema_output_is_valid_even_from_a_random_model(server: Server) -> None:
    sdk = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=60)
    out = sdk.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=1.0,
        seed=7,
        n=4,
        response_format={"type": "json_schema", "json_schema": {"name": "route", "schema": ROUTE}},
    )
    for choice in out.choices:
        data = json.loads(choice.message.content or "")
        assert data["route"] in ("retrieve", "chat") and isinstance(data["confident"], bool)
        assert set(data) == {"route", "confident"} and choice.finish_reason == "stop"


@pytest.mark.parametrize(
    "constraint",
    [
        {"structured_outputs": {"choice": ["yes", "no"]}},
        {"guided_choice": ["yes", "no"]},
        {"structured_outputs": {"regex": "(yes|no)"}},
    ],
)
def test_vllm_choice_and_regex_fields(server: Server, constraint: dict[str, Any]) -> None:
    response = chat(server, temperature=1.0, seed=3, n=3, **constraint)
    assert response.status_code == 200, response.text
    texts = [c["message"]["content"] for c in response.json()["choices"]]
    assert set(texts) <= {"yes", "no"}, texts


def test_any_json_object(server: Server) -> None:
    response = chat(server, response_format={"type": "json_object"}, max_tokens=200)
    choice = response.json()["choices"][0]
    if choice["finish_reason"] == "stop":  # a random model may run out of tokens mid-string
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    assert choice["message"]["content"].startswith("{")


def test_constrained_and_free_rows_share_a_batch_without_touching_each_other(
    server: Server,
) -> None:
    free_alone = chat(server, max_tokens=12, ignore_eos=True).json()
    bodies: list[dict[str, Any]] = [
        {"max_tokens": 12, "ignore_eos": True},
        {"guided_json": ROUTE},
        {"max_tokens": 12, "ignore_eos": True},
        {"structured_outputs": {"choice": ["yes", "no"]}},
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = [r.json() for r in pool.map(lambda b: chat(server, **b), bodies)]
    free = [a["choices"][0]["message"]["content"] for a in answers[::2]]
    assert free == [free_alone["choices"][0]["message"]["content"]] * 2
    assert json.loads(answers[1]["choices"][0]["message"]["content"])["route"] in (
        "retrieve",
        "chat",
    )
    assert answers[3]["choices"][0]["message"]["content"] in ("yes", "no")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"response_format": {"type": "json_schema"}}, "needs json_schema.schema"),
        ({"guided_json": {"type": "no-such-type"}}, "Cannot build the json_schema grammar"),
        ({"guided_choice": []}, "non-empty list"),
        ({"guided_choice": ["a"], "guided_regex": "b"}, "one structured output"),
    ],
)
def test_bad_constraints_are_400(server: Server, body: dict[str, Any], needle: str) -> None:
    response = chat(server, **body)
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]
