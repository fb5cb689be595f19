"""The product end to end over real HTTP: the embedded model server with the tiny model,
the API process over SQLite and Qdrant local mode, documents, chat, feedback, isolation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.app.conftest import Api, auth, create_user, wait_ingested
from tests.app.sse import chat_stream

pytestmark = pytest.mark.slow

DOC = """# Boiling points

## Water

Water boils at 100 degrees Celsius at sea level. At the top of Mount Everest it boils
at about 70 degrees Celsius because the air pressure is lower.

## Ethanol

Ethanol boils at 78 degrees Celsius.
"""


def wait_ready(client: httpx.Client, api: Api, key: str, doc_id: str) -> dict[str, Any]:
    return wait_ingested(client, api.url, key, doc_id)


def upload(client: httpx.Client, api: Api, key: str, name: str, body: bytes) -> dict[str, Any]:
    response = client.post(
        f"{api.url}/documents", headers=auth(key), files=[("files", (name, body))]
    )
    assert response.status_code == 202, response.text
    return response.json()


@pytest.fixture(scope="module")
def users(api: Api) -> dict[str, str]:
    return {"a": create_user(api, "alice-e2e"), "b": create_user(api, "bob-e2e")}


def rows(api: Api, sql: str, **params: Any) -> list[Any]:
    with create_engine(api.db_url()).connect() as conn:
        return list(conn.execute(text(sql), params).mappings())


def test_health_is_open_and_reports_every_part(api: Api) -> None:
    body = httpx.get(f"{api.url}/health").json()
    assert body["status"] == "ok"
    assert body["database"] is True and body["qdrant"] is True
    assert body["model_server"]["ok"] is True
    assert "demo_model" in body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/chat"),
        ("GET", "/threads"),
        ("GET", "/documents"),
        ("GET", "/memories"),
        ("DELETE", "/memories"),
        ("GET", "/metrics"),
        ("GET", "/v1/models"),
        ("POST", "/turns/x/feedback"),
    ],
)
def test_every_route_but_health_needs_a_key(api: Api, method: str, path: str) -> None:
    response = httpx.request(method, f"{api.url}{path}")
    assert response.status_code == 401
    assert "API key" in response.json()["detail"]
    bad = httpx.request(method, f"{api.url}{path}", headers=auth("fw_wrong"))
    assert bad.status_code == 401


def test_admin_routes_refuse_users(api: Api, users: dict[str, str]) -> None:
    response = httpx.get(f"{api.url}/admin/adapters", headers=auth(users["a"]))
    assert response.status_code == 403
    assert httpx.get(f"{api.url}/me", headers=auth(users["a"])).json()["role"] == "user"
    admin = create_user(api, "root-e2e", admin=True)
    assert httpx.get(f"{api.url}/admin/adapters", headers=auth(admin)).status_code == 200
    me = httpx.get(f"{api.url}/me", headers=auth(admin)).json()
    assert (me["name"], me["role"]) == ("root-e2e", "admin")


def test_a_user_opts_in_to_training_on_their_sources(api: Api) -> None:
    key = create_user(api, "opt-in-e2e")
    assert httpx.get(f"{api.url}/me", headers=auth(key)).json()["train_on_context"] is False
    refused = httpx.patch(f"{api.url}/me", headers=auth(key), json={"train_on_context": 1})
    assert refused.status_code == 422, "a strict boolean, not a truthy number"
    changed = httpx.patch(f"{api.url}/me", headers=auth(key), json={"train_on_context": True})
    assert changed.status_code == 200 and changed.json()["train_on_context"] is True
    assert httpx.get(f"{api.url}/me", headers=auth(key)).json()["train_on_context"] is True

    from app.store import open_database
    from app.store.users import user_by_name

    db = open_database(api.db_url())
    try:
        stored = user_by_name(db, "opt-in-e2e")
        assert stored is not None and stored.train_on_context, "the trainer reads this column"
    finally:
        db.close()


def assert_others_see_nothing(
    client: httpx.Client, api: Api, other: str, doc_id: str, done: dict[str, Any]
) -> None:
    """Another user asking the same never sees the document, thread, turn or memories."""
    events = chat_stream(client, api.url, other, "At what temperature does water boil?")
    assert events[-2][1]["sources"] == []
    assert "could not find" in "".join(d["text"] for k, d in events if k == "token")
    h = auth(other)
    thread_url, turn_url = f"{api.url}/threads/{done['thread_id']}", f"{api.url}/turns"
    assert client.get(f"{api.url}/documents", headers=h).json() == []
    assert client.get(f"{api.url}/documents/{doc_id}", headers=h).status_code == 404
    assert client.delete(f"{api.url}/documents/{doc_id}", headers=h).status_code == 404
    threads = client.get(f"{api.url}/threads", headers=h).json()
    assert done["thread_id"] not in {t["id"] for t in threads}
    assert client.get(thread_url, headers=h).status_code == 404
    assert client.delete(thread_url, headers=h).status_code == 404
    rate = client.post(f"{turn_url}/{done['turn_id']}/feedback", headers=h, json={"rating": -1})
    assert rate.status_code == 404
    # Nor can they continue the thread.
    r = client.post(
        f"{api.url}/chat",
        headers=h,
        json={"message": "more?", "thread_id": done["thread_id"], "stream": False},
    )
    assert r.status_code == 404


def test_upload_chat_feedback_and_isolation(api: Api, users: dict[str, str]) -> None:
    a, b = users["a"], users["b"]
    with httpx.Client(timeout=60) as client:
        result = upload(client, api, a, "boiling.md", DOC.encode())
        doc_id = result["documents"][0]["id"]
        doc = wait_ready(client, api, a, doc_id)
        assert doc["status"] == "ready", doc
        assert doc["chunks"] >= 1

        events = chat_stream(client, api.url, a, "At what temperature does water boil?")
        kinds = [k for k, _ in events]
        assert kinds.count("token") >= 1
        assert kinds[-2:] == ["sources", "done"]
        sources = events[-2][1]["sources"]
        assert sources and all(s["document_id"] == doc_id for s in sources)
        assert [s["number"] for s in sources] == list(range(1, len(sources) + 1))
        done = events[-1][1]
        streamed = "".join(d["text"] for k, d in events if k == "token")
        assert streamed.strip()

        turn = rows(api, "SELECT * FROM turns WHERE id = :id", id=done["turn_id"])[0]
        assert turn["user_id"] and turn["thread_id"] == done["thread_id"]
        assert turn["question"] == "At what temperature does water boil?"
        assert '"role": "system"' in turn["messages"] and "boils at 100" in turn["messages"]
        assert doc_id in turn["retrieved"]
        assert turn["model"] and turn["sampling"] and turn["timings"]
        assert turn["prompt_tokens"] > 0 and turn["completion_tokens"] > 0
        assert turn["error"] is None

        fb = client.post(
            f"{api.url}/turns/{done['turn_id']}/feedback",
            headers=auth(a),
            json={"rating": 1, "comment": "good", "corrected_answer": "100 °C [1]"},
        )
        assert fb.status_code == 200, fb.text
        stored = rows(api, "SELECT * FROM feedback WHERE turn_id = :id", id=done["turn_id"])
        assert [(r["rating"], r["corrected_answer"]) for r in stored] == [(1, "100 °C [1]")]

        assert_others_see_nothing(client, api, b, doc_id, done)

        # Alice sees her thread with the turn and its rating.
        thread = client.get(f"{api.url}/threads/{done['thread_id']}", headers=auth(a)).json()
        assert [t["id"] for t in thread["turns"]] == [done["turn_id"]]
        assert thread["turns"][0]["rating"] == 1
        # Only Alice can take her rating back, once.
        unrate = f"{api.url}/turns/{done['turn_id']}/feedback"
        assert client.delete(unrate, headers=auth(b)).status_code == 404
        assert client.delete(unrate, headers=auth(a)).status_code == 204
        assert client.delete(unrate, headers=auth(a)).status_code == 404
        assert rows(api, "SELECT * FROM feedback WHERE turn_id = :id", id=done["turn_id"]) == []

        # Deleting the document removes its chunks from search.
        assert client.delete(f"{api.url}/documents/{doc_id}", headers=auth(a)).status_code == 204
        events = chat_stream(client, api.url, a, "At what temperature does water boil?")
        assert events[-2][1]["sources"] == []


def test_non_streaming_chat_and_thread_continuation(api: Api, users: dict[str, str]) -> None:
    with httpx.Client(timeout=60) as client:
        first = client.post(
            f"{api.url}/chat", headers=auth(users["a"]), json={"message": "hello", "stream": False}
        )
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["answer"] and body["turn_id"] and body["thread_id"]
        second = client.post(
            f"{api.url}/chat",
            headers=auth(users["a"]),
            json={"message": "thanks", "thread_id": body["thread_id"], "stream": False},
        ).json()
        assert second["thread_id"] == body["thread_id"]
        thread = client.get(
            f"{api.url}/threads/{body['thread_id']}", headers=auth(users["a"])
        ).json()
        assert len(thread["turns"]) == 2


def test_bad_uploads_get_actionable_statuses(api: Api, users: dict[str, str]) -> None:
    with httpx.Client(timeout=60) as client:
        r = client.post(
            f"{api.url}/documents", headers=auth(users["a"]), files=[("files", ("x.exe", b"MZ"))]
        )
        assert r.status_code == 415
        assert "x.exe" in r.json()["detail"]
        big = b"a" * (26 * 1024 * 1024)
        r = client.post(
            f"{api.url}/documents", headers=auth(users["a"]), files=[("files", ("big.txt", big))]
        )
        assert r.status_code == 413
        assert "MAX_UPLOAD_MB" in r.json()["detail"]
        # A corrupt PDF in a batch fails alone, with its reason; the good file is ingested.
        result = client.post(
            f"{api.url}/documents",
            headers=auth(users["a"]),
            files=[
                ("files", ("bad.pdf", b"%PDF-1.7 garbage")),
                ("files", ("ok.txt", b"Fine text.")),
            ],
        ).json()
        by_name = {d["filename"]: d["id"] for d in result["documents"]}
        bad = wait_ready(client, api, users["a"], by_name["bad.pdf"])
        ok = wait_ready(client, api, users["a"], by_name["ok.txt"])
        assert bad["status"] == "failed" and "bad.pdf" in bad["error"]
        assert ok["status"] == "ready"


def test_unknown_turn_and_bad_feedback(api: Api, users: dict[str, str]) -> None:
    h = auth(users["a"])
    assert (
        httpx.post(f"{api.url}/turns/nope/feedback", headers=h, json={"rating": 1}).status_code
        == 404
    )
    r = httpx.post(f"{api.url}/turns/nope/feedback", headers=h, json={"rating": 5})
    assert r.status_code == 422


def test_openai_sdk_against_the_agent(api: Api, users: dict[str, str]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{api.url}/v1", api_key=users["a"])
    assert [m.id for m in client.models.list().data] == ["flywheel"]
    reply = client.chat.completions.create(
        model="flywheel", messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="flywheel", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        if c.choices
    ]
    assert "".join(pieces).strip()


def test_concurrent_chats_lose_no_turn(api: Api, users: dict[str, str]) -> None:
    import asyncio

    async def ask(client: httpx.AsyncClient, i: int) -> str:
        r = await client.post(
            f"{api.url}/chat",
            headers=auth(users["b"]),
            json={"message": f"hello number {i}", "stream": False},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["turn_id"])

    async def main() -> list[str]:
        async with httpx.AsyncClient(timeout=180) as client:
            return await asyncio.gather(*(ask(client, i) for i in range(20)))

    ids = asyncio.run(main())
    assert len(set(ids)) == 20
    found = rows(api, "SELECT id FROM turns WHERE id IN (" + ",".join(f"'{i}'" for i in ids) + ")")
    assert len(found) == 20


def test_metrics_count_turns(api: Api, users: dict[str, str]) -> None:
    body = httpx.get(f"{api.url}/metrics", headers=auth(users["a"])).text
    assert "flywheel_turns_total" in body
    assert 'flywheel_agent_stage_seconds_count{stage="generate"}' in body
