"""Memory on a busy model server: real mem0, real Qdrant (local mode), the real embedder,
and the loopback extraction server holding its replies until the test lets them go."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from qdrant_client import QdrantClient

from memory import MemoryItem, MemorySettings, UserMemory
from tests.memory.conftest import TIMEOUT_S, Responder, facts

pytestmark = pytest.mark.slow  # loads the embedder

# A request outlives the test's waits here: only the test ends it, by releasing the model.
PATIENT_TIMEOUT_S = 60.0
WAIT_S = 30.0  # generous: 2 shared cores
FACTS = ["Has a dog named Rex", "Plays the cello", "Lives in Oslo", "Works as a nurse", "Swims"]
_MARK = re.compile(r"(hold|go)-turn-(\d)")


def turn(mark: str, i: int) -> list[dict[str, str]]:
    """A turn of the user's carrying a marker the model reads its reply from."""
    return [
        {"role": "user", "content": f"Note {mark}-turn-{i}: {FACTS[i]}, by the way."},
        {"role": "assistant", "content": "Noted."},
    ]


class HeldModel:
    """The loopback model's reply: the turn's fact, held for 'hold' turns until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.turns: list[str] = []
        self.active = 0
        self.most_active = 0
        self._changed = threading.Condition()

    def __call__(self, body: dict[str, Any]) -> str:
        # mem0 may quote earlier turns as context: the current one is the newest marker.
        mark, i = max(_MARK.findall(body["messages"][-1]["content"]), key=lambda m: int(m[1]))
        with self._changed:
            self.turns.append(f"{mark}-{i}")
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self._changed.notify_all()
        if mark == "hold":
            self.release.wait(WAIT_S)
        with self._changed:
            self.active -= 1
        return facts(FACTS[int(i)])

    def wait_for(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.turns) >= count, WAIT_S), self.turns


@pytest.fixture
def model(responder: Responder) -> Iterator[HeldModel]:
    held = HeldModel()
    responder.reply = held
    yield held
    held.release.set()


def patient_store(
    settings: MemorySettings, qdrant: QdrantClient, collection: str, **update: Any
) -> UserMemory:
    """A store of its own whose requests wait long enough for the test to decide."""
    settings = settings.model_copy(
        update={"collection": collection, "timeout_s": PATIENT_TIMEOUT_S, **update}
    )
    store = UserMemory(settings, qdrant)
    store.warm_up()
    return store


@pytest.fixture(scope="module")
def patient(memory_settings: MemorySettings, qdrant: QdrantClient) -> Iterator[UserMemory]:
    store = patient_store(memory_settings, qdrant, "patient_memories", queue_per_user=2)
    yield store
    store.close()


def texts(items: list[MemoryItem]) -> set[str]:
    return {item.text for item in items}


def test_a_busy_model_gets_one_extraction_per_user_and_the_newest_turns(
    patient: UserMemory, model: HeldModel, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = patient.remember_in_background(user, turn("hold", 0))
    model.wait_for(1)

    with caplog.at_level(logging.WARNING, logger="memory"):
        later = [patient.remember_in_background(user, turn("hold", i)) for i in (1, 2, 3, 4)]
        # Turns 1 and 2 are pushed out by 3 and 4 at once; nothing more reaches the model.
        assert [f.result(timeout=1) for f in later[:2]] == [[], []]
        time.sleep(0.3)
        assert model.turns == ["hold-0"]
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 2 and all(user in m and "is busy" in m for m in drops), drops
    assert "2 dropped so far" in drops[-1]

    model.release.set()
    assert texts(first.result(timeout=WAIT_S)) == {FACTS[0]}
    assert [texts(f.result(timeout=WAIT_S)) for f in later[2:]] == [{FACTS[3]}, {FACTS[4]}]
    assert model.turns == ["hold-0", "hold-3", "hold-4"]
    assert model.most_active == 1
    assert texts(patient.list(user)) == {FACTS[0], FACTS[3], FACTS[4]}


def test_a_user_on_a_held_extraction_does_not_hold_up_another(
    patient: UserMemory, model: HeldModel, user: str, other_user: str
) -> None:
    held = patient.remember_in_background(user, turn("hold", 1))
    model.wait_for(1)

    quick = patient.remember_in_background(other_user, turn("go", 2))

    assert texts(quick.result(timeout=WAIT_S)) == {FACTS[2]}
    assert not held.done()  # still waiting on the model, and nobody waited on it
    model.release.set()
    assert texts(held.result(timeout=WAIT_S)) == {FACTS[1]}


def test_close_returns_within_the_grace_with_extractions_queued(
    memory_settings: MemorySettings,
    qdrant: QdrantClient,
    model: HeldModel,
    user: str,
    other_user: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    grace_s = 0.5
    store = patient_store(
        memory_settings, qdrant, "closing_memories", queue_per_user=2, close_grace_s=grace_s
    )
    running = [
        store.remember_in_background(user, turn("hold", 0)),
        store.remember_in_background(other_user, turn("hold", 1)),
    ]
    model.wait_for(2)
    waiting = [store.remember_in_background(user, turn("hold", i)) for i in (2, 3, 4)]

    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="memory"):
        store.close()
        closed_at = time.time()
        elapsed = time.perf_counter() - started
        assert elapsed < grace_s + 2.0  # not PATIENT_TIMEOUT_S, not the sum of the queue

        assert waiting[0].result(timeout=0) == []  # pushed out by turn 4
        assert [f.result(timeout=0) for f in waiting[1:]] == [[], []]  # dropped by close
        messages = [r.getMessage() for r in caplog.records]
        assert any("dropped 2 queued extraction(s) of 1 user(s)" in m for m in messages)
        assert any("2 extraction(s) still running" in m for m in messages), messages

        model.release.set()  # the two in flight end on their own, against a closed store
        for future in running:
            future.result(timeout=WAIT_S)
    assert sorted(model.turns) == ["hold-0", "hold-1"]
    # Their late failure against the closed store is expected, not a warning.
    late = [
        r.getMessage()
        for r in caplog.records
        if r.created > closed_at and r.name.startswith("memory") and r.levelno >= logging.WARNING
    ]
    assert not [m for m in late if "fail" in m], late


def test_a_model_timeout_is_logged_as_busy(
    memories: UserMemory, responder: Responder, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    responder.reply = facts("Should never be stored")
    responder.delay_s = TIMEOUT_S + 2

    with caplog.at_level(logging.WARNING, logger="memory"):
        assert memories.remember_in_background(user, turn("go", 0)).result(timeout=WAIT_S) == []

    messages = [r.getMessage() for r in caplog.records]
    busy = [m for m in messages if "the model server" in m and "is busy" in m]
    assert len(busy) == 1 and user in busy[0] and "not retried" in busy[0], messages
    assert not any("Is it up?" in m or "unreachable" in m for m in messages), messages
