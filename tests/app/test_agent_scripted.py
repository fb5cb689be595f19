"""Agent behaviour that needs a capable model, with a scripted responder standing in:
citations mapped to sources, follow-ups rewritten from history, a model server that dies
mid-answer. The API is the real process; only the model is scripted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.agent import prompts
from app.store.records import says_not_in_documents
from tests.app.conftest import (
    Api,
    auth,
    create_user,
    start_api,
    start_responder,
    stop,
    wait_ingested,
)
from tests.app.responder import REWRITE
from tests.app.sse import chat_stream, parse_events

pytestmark = pytest.mark.slow

DOC = "Water boils at 100 degrees Celsius at sea level.\n\nIce melts at 0 degrees Celsius."


@contextmanager
def scripted_stack(data_dir: Path, user: str, **env: str) -> Iterator[tuple[Api, str]]:
    """The API on the scripted model, with ``user`` owning the water document."""
    url, responder = start_responder()
    api = start_api(data_dir, url, MEMORY_ENABLED="false", **env)
    try:
        key = create_user(api, user)
        with httpx.Client(timeout=60) as client:
            r = client.post(
                f"{api.url}/documents",
                headers=auth(key),
                files=[("files", ("water.txt", DOC.encode()))],
            )
            wait_ingested(client, api.url, key, r.json()["documents"][0]["id"])
        yield api, key
    finally:
        stop(api.proc)
        stop(responder)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str]]:
    with scripted_stack(
        tmp_path_factory.mktemp("scripted"), "carol", AGENT_RETRY_UNSUPPORTED="true"
    ) as stack:
        yield stack


def turn_row(api: Api, turn_id: str) -> dict[str, Any]:
    with create_engine(api.db_url()).connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM turns WHERE id = :i"), {"i": turn_id}).mappings().one()
        )


def test_citations_become_sources_and_dangling_ones_are_dropped(scripted: tuple[Api, str]) -> None:
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        events = chat_stream(client, api.url, key, "When does water boil?")
    sources = events[-2][1]["sources"]
    assert sources[0]["cited"] is True
    assert "boils at 100" in sources[0]["text"]
    done = events[-1][1]
    assert "[1]" in done["answer"] and "[7]" not in done["answer"]
    row = turn_row(api, done["turn_id"])
    assert '"number": 1' in row["sources"] and '"number": 7' not in row["sources"]


def test_follow_up_is_rewritten_with_the_history(scripted: tuple[Api, str]) -> None:
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        first = chat_stream(client, api.url, key, "Tell me about water.")[-1][1]
        second = chat_stream(
            client, api.url, key, "and when does it boil?", thread_id=first["thread_id"]
        )[-1][1]
    assert turn_row(api, first["turn_id"])["standalone_query"] == "Tell me about water."
    row = turn_row(api, second["turn_id"])
    assert row["standalone_query"] == REWRITE
    # The history went into the answer prompt too.
    assert "Tell me about water." in row["messages"]


def test_model_server_killed_mid_stream(tmp_path: Path) -> None:
    url, responder = start_responder(slow=True)
    api = start_api(tmp_path, url, MEMORY_ENABLED="false")
    try:
        key = create_user(api, "dave")
        with (
            httpx.Client(timeout=60) as client,
            client.stream(
                "POST", f"{api.url}/chat", json={"message": "hello"}, headers=auth(key)
            ) as response,
        ):
            lines = response.iter_lines()
            for line in lines:  # wait for the first token, then kill the model server
                if line.startswith("event: token"):
                    responder.kill()
                    responder.wait()
                    break
            rest = parse_events(lines)
        kinds = [k for k, _ in rest]
        assert kinds[-1] == "error"
        error = rest[-1][1]
        assert error["status"] == 503 and "model server" in error["message"]
        row = turn_row(api, error["turn_id"])
        assert row["error"] and "model server" in row["error"]
        assert row["answer"].startswith("word")
        # The API keeps serving, and says what is down.
        assert httpx.get(f"{api.url}/threads", headers=auth(key)).status_code == 200
        health = httpx.get(f"{api.url}/health")
        assert health.status_code == 503 and health.json()["model_server"]["ok"] is False
        r = httpx.post(
            f"{api.url}/chat",
            headers=auth(key),
            json={"message": "hi", "stream": False},
            timeout=60,
        )
        assert r.status_code == 503 and "model server" in r.json()["detail"]
    finally:
        stop(api.proc)
        stop(responder)


def test_an_answer_without_markers_gets_citations_attached(scripted: tuple[Api, str]) -> None:
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        events = chat_stream(client, api.url, key, "When does ice melt?")
    done = events[-1][1]
    # The supported sentence cites the passage; the pleasantry cites nothing.
    assert done["answer"].strip() == "Ice melts at 0 degrees Celsius [1]. I hope that helps!"
    cited = [s for s in events[-2][1]["sources"] if s["cited"]]
    assert [(s["number"], s["origin"]) for s in cited] == [(1, "attached")]
    stored = json.loads(turn_row(api, done["turn_id"])["sources"])
    assert [(s["number"], s["origin"]) for s in stored] == [(1, "attached")]
    # What the model wrote itself is recorded as such.
    with httpx.Client(timeout=60) as client:
        done = chat_stream(client, api.url, key, "When does water boil?")[-1][1]
    stored = json.loads(turn_row(api, done["turn_id"])["sources"])
    assert [(s["number"], s["origin"]) for s in stored] == [(1, "model")]


def test_an_answer_no_source_supports_is_declined_when_asked_to(
    scripted: tuple[Api, str], tmp_path: Path
) -> None:
    question = "When does ice melt, please?"  # the model makes something up, citing nothing
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        kept = chat_stream(client, api.url, key, question)[-1][1]
    # Off by default: the answer stands, uncited.
    assert "green cheese" in kept["answer"]
    with (
        scripted_stack(tmp_path, "fred", AGENT_DECLINE_UNGROUNDED="true") as (api, key),
        httpx.Client(timeout=60) as client,
    ):
        events = chat_stream(client, api.url, key, question)
        done = events[-1][1]
        assert done["answer"] == prompts.NOT_SUPPORTED
        assert not [s for s in events[-2][1]["sources"] if s["cited"]]
        row = turn_row(api, done["turn_id"])
    assert row["answer"] == prompts.NOT_SUPPORTED
    # Declined after the model answered, not on the evidence before it was asked.
    assert "green cheese" in "".join(d["text"] for kind, d in events if kind == "token")
    assert row["messages"] not in (None, "[]", [])


def test_an_unsupported_false_start_is_asked_again_and_the_supported_retry_kept(
    scripted: tuple[Api, str],
) -> None:
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        events = chat_stream(client, api.url, key, "So when does ice melt?")
    streamed = "".join(d["text"] for kind, d in events if kind == "token")
    assert streamed.strip() == "The answer is:"  # what the first sample said
    done = events[-1][1]
    # The retry's answer is the one that counts: in ``done``, stored, and cited.
    assert done["answer"].strip() == "Ice melts at 0 degrees Celsius [1]. I hope that helps!"
    row = turn_row(api, done["turn_id"])
    assert row["answer"] == done["answer"]
    assert [(s["number"], s["origin"]) for s in json.loads(row["sources"])] == [(1, "attached")]


def test_a_sentence_said_twice_is_kept_once(scripted: tuple[Api, str]) -> None:
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        done = chat_stream(client, api.url, key, "When exactly does ice melt?")[-1][1]
    assert done["answer"] == "Ice melts at 0 degrees Celsius [1]. It turns into water."
    assert turn_row(api, done["turn_id"])["answer"] == done["answer"]


def test_an_answer_that_starts_to_loop_is_stopped(scripted: tuple[Api, str]) -> None:
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        events = chat_stream(client, api.url, key, "Does water boil at 100 degrees?")
    streamed = "".join(data["text"] for kind, data in events if kind == "token")
    # The model would have said the phrase 2,000 times; the agent stopped reading early.
    assert streamed.count("very hot") < 10
    done = events[-1][1]
    assert done["answer"] == "Yes, water boils at 100 degrees Celsius [1]."
    assert turn_row(api, done["turn_id"])["answer"] == done["answer"]


def test_a_question_the_documents_do_not_answer_is_declined(scripted: tuple[Api, str]) -> None:
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        done = chat_stream(client, api.url, key, "Who won the 1998 football world cup?")[-1][1]
    assert done["answer"] == prompts.NOT_SUPPORTED
    row = turn_row(api, done["turn_id"])
    # Declined on evidence: the model was never asked, the closest passage is kept.
    assert row["messages"] in (None, "[]", [])
    assert "boils at 100" in row["retrieved"]


def test_the_passage_check_declines_when_the_model_says_no(tmp_path: Path) -> None:
    with (
        scripted_stack(tmp_path, "erin", AGENT_PASSAGE_CHECK="true") as (api, key),
        httpx.Client(timeout=60) as client,
    ):
        # The responder says the passage does not answer anything about boiling.
        declined = chat_stream(client, api.url, key, "When does water boil?")[-1][1]
        answered = chat_stream(client, api.url, key, "When does ice melt?")[-1][1]
    assert declined["answer"] == prompts.NOT_SUPPORTED
    assert answered["answer"].startswith("Ice melts at 0 degrees Celsius [1].")


def test_a_personal_statement_is_acknowledged_not_searched(scripted: tuple[Api, str]) -> None:
    api, key = scripted
    with httpx.Client(timeout=60) as client:
        done = chat_stream(client, api.url, key, "My name is Ana and I work on cats.")[-1][1]
    assert not says_not_in_documents(done["answer"])
    row = turn_row(api, done["turn_id"])
    assert row["route"] == "direct"
    assert row["retrieved"] in ("[]", [])
