"""Parsing of extraction replies and the explicit-statement fallback (no models needed)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from memory.extraction import (
    COMPACT_PROMPT,
    CheckedExtractor,
    explicit_statements,
    parse_extraction,
    server_trouble,
)


def test_sound_reply() -> None:
    outcome = parse_extraction('{"memory": [{"text": "Is vegetarian", "attributed_to": "user"}]}')
    assert outcome.facts == [{"text": "Is vegetarian", "attributed_to": "user"}]
    assert outcome.problem is None


def test_the_prompts_placeholders_are_not_facts() -> None:
    # What SmolLM2-135M answered before the schema: the prompt's example, copied.
    outcome = parse_extraction('{"memory": [{"text": "first fact"}, {"text": "Second fact."}]}')
    assert outcome.facts == []
    assert outcome.problem is not None and "example echoed back" in outcome.problem
    kept = parse_extraction('{"memory": [{"text": "<fact>"}, {"text": "Works on cats"}]}')
    assert kept.facts == [{"text": "Works on cats"}]


def test_nothing_to_remember_is_not_a_problem() -> None:
    outcome = parse_extraction('{"memory": []}')
    assert (outcome.facts, outcome.problem) == ([], None)


@pytest.mark.parametrize(
    "reply",
    [
        '```json\n{"memory": [{"text": "Codes in Rust"}]}\n```',
        'Here you go: {"memory": [{"text": "Codes in Rust"}]} Hope that helps.',
    ],
)
def test_json_wrapped_in_prose_or_fences_is_recovered(reply: str) -> None:
    assert parse_extraction(reply).facts == [{"text": "Codes in Rust"}]


@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        (None, "empty reply"),
        ("   ", "empty reply"),
        ('{"memory": [{"text": "x"}', "not valid JSON"),
        ("The user likes tea.", "not valid JSON"),
        ('{"facts": ["likes tea"]}', 'not {"memory": [...]}'),
        ('{"memory": {"text": "likes tea"}}', "not a list"),
        ('{"memory": [1, "likes tea", {"text": "  "}]}', "3 of 3"),
    ],
)
def test_broken_replies_say_why(reply: str | None, cause: str) -> None:
    outcome = parse_extraction(reply)
    assert outcome.facts == []
    assert outcome.problem is not None and cause in outcome.problem


class _Scripted:
    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.seen: list[list[dict[str, str]]] = []

    def generate_response(self, messages: list[dict[str, str]], **kwargs: object) -> str:
        self.seen.append(messages)
        return self.reply


@pytest.mark.parametrize("prompt", [None, COMPACT_PROMPT])
def test_system_prompt_is_swapped_only_when_asked(prompt: str | None) -> None:
    llm = _Scripted('{"memory": []}')
    sent = [{"role": "system", "content": "mem0's long prompt"}, {"role": "user", "content": "u"}]

    CheckedExtractor(llm, prompt).generate_response(sent)

    assert llm.seen[0][0] == {"role": "system", "content": prompt or "mem0's long prompt"}
    assert llm.seen[0][1] == sent[1]
    assert len(COMPACT_PROMPT) < 2000  # small models must read it quickly


def test_checked_extractor_hands_mem0_only_valid_facts() -> None:
    extractor = CheckedExtractor(_Scripted('{"memory": ["bare", {"text": "Likes tea"}]}'))
    extractor.reset()

    passed_on = extractor.generate_response([{"role": "user", "content": "hi"}])

    assert json.loads(passed_on) == {"memory": [{"text": "Likes tea"}]}
    outcome = extractor.take()
    assert outcome is not None and outcome.problem is not None and "1 of 2" in outcome.problem
    assert extractor.take() is None


def test_explicit_statements_keep_first_person_facts_only() -> None:
    messages = [
        {"role": "system", "content": "I am the system prompt."},
        {"role": "user", "content": "Hello! I'm vegetarian. My project is in Rust. Is it fast?"},
        {"role": "assistant", "content": "I think Rust is fast."},
        {"role": "user", "content": "The weather is nice.\nI live in Lisbon"},
    ]
    assert explicit_statements(messages) == [
        "I'm vegetarian.",
        "My project is in Rust.",
        "I live in Lisbon",
    ]


_REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def _status(code: int) -> openai.APIStatusError:
    response = httpx.Response(code, request=_REQUEST, json={"error": {"message": "x"}})
    return openai.APIStatusError("x", response=response, body=None)


def _wrapped(exc: Exception) -> Exception:
    """The error as mem0 raises it: its own, from the client's."""
    try:
        raise RuntimeError(f"LLM extraction failed: {exc}") from exc
    except RuntimeError as wrapper:
        return wrapper


@pytest.mark.parametrize(
    ("error", "trouble"),
    [
        (openai.APITimeoutError(request=_REQUEST), "busy"),
        (_status(429), "busy"),
        (_status(503), "busy"),
        (TimeoutError("read timed out"), "busy"),
        (openai.APIConnectionError(request=_REQUEST), "unreachable"),
        (_status(500), None),
        (_status(400), None),
        (ValueError("a bug"), None),
    ],
)
def test_server_trouble_tells_busy_from_unreachable(error: Exception, trouble: str | None) -> None:
    assert server_trouble(error) == trouble
    assert server_trouble(_wrapped(error)) == trouble
