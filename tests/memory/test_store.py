"""UserMemory over real mem0, real Qdrant (local mode), the real MiniLM embedder, and a
scripted OpenAI-compatible extraction server on loopback."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest
from qdrant_client import QdrantClient

from memory import MemoryItem, MemorySettings, UserMemory
from memory.extraction import COMPACT_PROMPT, MEMORY_FORMAT
from tests.memory.conftest import TIMEOUT_S, Responder, facts

pytestmark = pytest.mark.slow  # loads the embedder once per session (several seconds)

TURN = [
    {"role": "user", "content": "I'm vegetarian, and my project is written in Rust."},
    {"role": "assistant", "content": "Good to know! How can I help with the project?"},
]


def texts(items: list[MemoryItem]) -> set[str]:
    return {item.text for item in items}


def test_remember_then_recall_finds_it(
    memories: UserMemory, responder: Responder, user: str
) -> None:
    responder.reply = facts("Is vegetarian", "Project is written in Rust")

    stored = memories.remember(user, TURN, thread_id="thread-1")

    assert texts(stored) == {"Is vegetarian", "Project is written in Rust"}
    assert all(item.thread_id == "thread-1" and item.created_at for item in stored)
    found = memories.recall(user, "What should I cook for dinner? I don't eat meat.", k=1)
    assert [item.text for item in found] == ["Is vegetarian"]
    assert found[0].score is not None and found[0].score > 0
    rust = memories.recall(user, "which programming language does my code use", k=1)
    assert [item.text for item in rust] == ["Project is written in Rust"]


def test_extraction_request_goes_to_the_configured_model(
    memories: UserMemory, responder: Responder, user: str, memory_settings: MemorySettings
) -> None:
    memories.remember(user, TURN)

    assert len(responder.requests) == 1
    request = responder.requests[0]
    assert request["model"] == memory_settings.llm_model_name == "extractor-under-test"
    # Decoded under the memory schema (structured outputs), not just "some JSON object".
    assert request["response_format"] == MEMORY_FORMAT
    assert request["messages"][0] == {"role": "system", "content": COMPACT_PROMPT}
    assert "my project is written in Rust" in request["messages"][-1]["content"]


def test_users_are_isolated(
    memories: UserMemory, responder: Responder, user: str, other_user: str
) -> None:
    responder.reply = facts("Is allergic to peanuts")
    memories.remember(user, [{"role": "user", "content": "I'm allergic to peanuts"}])
    responder.reply = facts("Lives in Lisbon")
    memories.remember(other_user, [{"role": "user", "content": "I live in Lisbon"}])

    # Each asks about the other's fact: it never comes back, only their own can.
    assert "Lives in Lisbon" not in texts(memories.recall(user, "where do I live", k=5))
    assert "Is allergic to peanuts" not in texts(
        memories.recall(other_user, "am I allergic to peanuts", k=5)
    )
    assert texts(memories.recall(user, "am I allergic to peanuts", k=5)) == {
        "Is allergic to peanuts"
    }
    assert texts(memories.recall(other_user, "where do I live", k=5)) == {"Lives in Lisbon"}
    assert texts(memories.list(user)) == {"Is allergic to peanuts"}
    assert texts(memories.list(other_user)) == {"Lives in Lisbon"}

    (theirs,) = memories.list(other_user)
    assert memories.forget(user, theirs.id) is False
    assert texts(memories.list(other_user)) == {"Lives in Lisbon"}
    assert memories.forget_all(user) == 1
    assert texts(memories.list(other_user)) == {"Lives in Lisbon"}


def test_forget_removes_the_memory_and_its_history(
    memories: UserMemory, responder: Responder, user: str
) -> None:
    responder.reply = facts("Has a grey cat named Miso", "Works at a bakery")
    stored = memories.remember(user, [{"role": "user", "content": "My cat Miso; I'm a baker"}])
    cat = next(item for item in stored if "cat" in item.text)
    assert memories._mem0().history(cat.id)  # mem0 recorded the ADD

    assert memories.forget(user, cat.id) is True

    assert texts(memories.list(user)) == {"Works at a bakery"}
    assert "cat" not in " ".join(texts(memories.recall(user, "tell me about my pets", k=5)))
    assert memories._mem0().history(cat.id) == []
    assert memories.forget(user, cat.id) is False  # already gone


def test_forget_unknown_or_malformed_id_is_a_no_op(memories: UserMemory, user: str) -> None:
    assert memories.forget(user, "00000000-0000-0000-0000-000000000000") is False
    assert memories.forget(user, "not-a-uuid") is False


def test_forget_all_removes_memories_and_saved_messages(
    memories: UserMemory, responder: Responder, user: str, memory_settings: MemorySettings
) -> None:
    responder.reply = facts("Plays tennis on Sundays", "Drinks flat whites", "Uses Neovim")
    memories.remember(user, TURN)
    assert len(memories.list(user)) == 3

    assert memories.forget_all(user) == 3

    assert memories.list(user) == []
    assert memories.recall(user, "tennis", k=5) == []
    assert memories.forget_all(user) == 0
    with sqlite3.connect(memory_settings.history_db_path) as db:
        (left,) = db.execute(
            "SELECT count(*) FROM messages WHERE session_scope = ?", (f"user_id={user}",)
        ).fetchone()
    assert left == 0  # mem0's copy of the raw turn went too


def test_list_is_newest_first(memories: UserMemory, user: str) -> None:
    for text in ["I like tea", "I like coffee", "I like cocoa"]:
        memories.remember(user, [{"role": "user", "content": text}], infer=False)

    assert [item.text for item in memories.list(user)] == [
        "I like cocoa",
        "I like coffee",
        "I like tea",
    ]


def test_infer_false_stores_only_what_the_user_said(memories: UserMemory, user: str) -> None:
    stored = memories.remember(user, TURN, infer=False)

    assert texts(stored) == {TURN[0]["content"]}
    assert texts(memories.list(user)) == {TURN[0]["content"]}


@pytest.mark.parametrize(
    "reply",
    [
        '{"memory": [{"text": "Is vegetarian"}',  # truncated
        "Sure! The user is vegetarian.",  # prose, no JSON
        '["Is vegetarian"]',  # JSON, wrong shape
        '{"memory": "Is vegetarian"}',  # "memory" not a list
        "",  # empty
    ],
)
def test_broken_extraction_stores_nothing_and_raises_nothing(
    memories: UserMemory,
    responder: Responder,
    user: str,
    reply: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    responder.reply = reply

    with caplog.at_level(logging.WARNING, logger="memory"):
        assert memories.remember(user, TURN) == []

    assert memories.list(user) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("extraction" in message and user in message for message in warnings), warnings


def test_malformed_entries_are_dropped_and_the_rest_kept(
    memories: UserMemory, responder: Responder, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    # mem0 alone raises AttributeError on a bare string entry.
    responder.reply = '{"memory": ["Is vegetarian", {"text": "Codes in Rust"}, {"text": ""}]}'

    with caplog.at_level(logging.WARNING, logger="memory"):
        stored = memories.remember(user, TURN)

    assert texts(stored) == {"Codes in Rust"}
    assert any("2 of 3" in r.getMessage() for r in caplog.records)


def test_server_down_remember_returns_quickly_and_recall_still_works(
    memories: UserMemory, responder: Responder, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    responder.reply = facts("Is training for a marathon")
    memories.remember(user, [{"role": "user", "content": "I'm training for a marathon"}])
    responder.stop()

    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="memory"):
        assert memories.remember(user, TURN) == []
    assert time.perf_counter() - started < TIMEOUT_S
    # Connection refused is reported as unreachable, never as busy.
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("memory")]
    assert any("is unreachable" in m and "Is it up?" in m for m in messages), messages
    assert not any("busy" in m for m in messages), messages

    assert texts(memories.recall(user, "what sport am I doing", k=3)) == {
        "Is training for a marathon"
    }


def test_slow_server_is_cut_off_at_the_timeout(
    memories: UserMemory, responder: Responder, user: str
) -> None:
    responder.reply = facts("Should never be stored")
    responder.delay_s = TIMEOUT_S + 2

    started = time.perf_counter()
    assert memories.remember(user, TURN) == []
    elapsed = time.perf_counter() - started

    assert elapsed < TIMEOUT_S + 1.5
    assert memories.list(user) == []


def test_remember_in_background_returns_at_once(
    memories: UserMemory, responder: Responder, user: str
) -> None:
    responder.reply = facts("Prefers answers in French")
    responder.delay_s = 0.5

    started = time.perf_counter()
    future = memories.remember_in_background(user, TURN, thread_id="t-9")
    assert time.perf_counter() - started < 0.2

    stored = future.result(timeout=TIMEOUT_S + 5)
    assert texts(stored) == {"Prefers answers in French"}
    assert texts(memories.list(user)) == {"Prefers answers in French"}


def test_explicit_statement_fallback_when_extraction_breaks(
    memories: UserMemory,
    responder: Responder,
    user: str,
    memory_settings: MemorySettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        memories, "settings", memory_settings.model_copy(update={"fallback_explicit": True})
    )
    responder.reply = "not json at all"
    turn = [
        {"role": "user", "content": "Hi. I'm vegetarian. Can you suggest a recipe?"},
        {"role": "assistant", "content": "I think a dal would suit you."},
    ]

    stored = memories.remember(user, turn)

    assert texts(stored) == {"I'm vegetarian."}


def test_user_id_with_spaces_is_refused(memories: UserMemory) -> None:
    with pytest.raises(ValueError, match="user_id"):
        memories.recall("two words", "anything")


def test_disabled_memory_recalls_nothing_and_stores_nothing(
    memories: UserMemory,
    memory_settings: MemorySettings,
    qdrant: QdrantClient,
    responder: Responder,
    user: str,
) -> None:
    memories.remember(user, [{"role": "user", "content": "I own a red bicycle"}], infer=False)
    off = UserMemory(memory_settings.model_copy(update={"enabled": False}), qdrant)
    responder.reply = facts("Owns a blue car")

    assert off.recall(user, "bicycle") == []
    assert off.remember(user, TURN) == []
    assert off.remember_in_background(user, TURN).result(timeout=1) == []
    assert off.list(user) == []
    assert off.forget_all(user) == 0

    assert responder.requests == []
    assert texts(memories.list(user)) == {"I own a red bicycle"}
    off.close()


def test_remember_after_close_is_a_logged_no_op(
    memory_settings: MemorySettings, qdrant: QdrantClient, user: str
) -> None:
    closed = UserMemory(memory_settings, qdrant)
    closed.close()

    assert closed.remember(user, TURN) == []
    assert closed.remember_in_background(user, TURN).result(timeout=1) == []
