"""Every page of the UI, run headless by AppTest against the real API on loopback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.app.conftest import Api, auth
from tests.conftest import free_port, wait_until
from tests.ui.conftest import DOC, app, rows, signed_in, upload_ready

pytestmark = pytest.mark.slow

BANNER = "answers are not meaningful; set LLM_MODEL"
PAGES = ["views/chat.py", "views/documents.py", "views/memory.py"]


def texts(at: Any) -> str:
    """Every markdown and caption text on the page, joined."""
    return "\n".join(m.value for m in [*at.markdown, *at.caption])


def test_unreachable_api_is_a_readable_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui.settings import get_settings

    monkeypatch.setenv("FLYWHEEL_API_URL", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    try:
        at = app().run()
        at.text_input[0].input("some-key")
        at.button[0].click().run()
    finally:
        get_settings.cache_clear()
    assert not at.exception
    messages = [e.value for e in at.error]
    assert messages and all("Cannot reach the Flywheel API" in m for m in messages)
    assert not at.chat_input  # still on the sign-in page


def test_wrong_key_is_refused_with_a_readable_message(ui_env: Api) -> None:
    at = app().run()
    at.text_input[0].input("not-a-key")
    at.button[0].click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The API key was not accepted. Use the key printed by `make run`, or create one with "
        "`python -m app.users create NAME`. (invalid or revoked API key; an admin makes one "
        "with 'python -m app.users create NAME' or 'python -m app.users rotate NAME')"
    ]
    assert not at.chat_input


def test_good_key_signs_in_to_the_chat(ui_env: Api, keys: dict[str, str]) -> None:
    at = signed_in(keys["user"])
    assert at.chat_input, "the chat page is the first page after signing in"
    assert [s.value for s in at.subheader] == ["New chat"]
    assert "Signed in" in texts(at)


def test_key_prefilled_from_settings(
    ui_env: Api, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui.settings import get_settings

    monkeypatch.setenv("FLYWHEEL_API_KEY", keys["user"])
    get_settings.cache_clear()
    try:
        at = app().run()
        assert at.text_input[0].value == keys["user"]
        at.button[0].click().run()  # no typing: the prefilled key signs in
    finally:
        get_settings.cache_clear()
    assert not at.exception and not at.error
    assert at.chat_input


def test_a_thread_that_is_gone_is_a_message(ui_env: Api, keys: dict[str, str]) -> None:
    at = signed_in(keys["user"])
    at.session_state["thread_id"] = "deleted-elsewhere"
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Not found: it may have been deleted, or it belongs to another user. "
        "(no thread 'deleted-elsewhere')"
    ]
    assert [s.value for s in at.subheader] == ["New chat"]


def test_demo_banner_on_every_page(ui_env: Api, keys: dict[str, str]) -> None:
    assert httpx.get(f"{ui_env.url}/health").json()["demo_model"] is True
    at = app().run()
    assert any(BANNER in w.value for w in at.warning), "sign-in page"
    at = signed_in(keys["user"])
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert any(BANNER in w.value for w in at.warning), page


def test_chat_streams_an_answer_with_sources_and_stores_thumbs_up(
    ui_env: Api, keys: dict[str, str]
) -> None:
    doc = upload_ready(ui_env, keys["user"], "boiling.md", DOC.encode())
    at = signed_in(keys["user"], timeout=180)
    question = "At what temperature does water boil?"
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    turn = rows(ui_env, "SELECT * FROM turns WHERE question = :q", q=question)[-1]
    thread = rows(ui_env, "SELECT title FROM threads WHERE id = :id", id=turn["thread_id"])[0]
    assert [s.value for s in at.subheader] == [thread["title"]]
    user_msg, answer_msg = at.chat_message[-2], at.chat_message[-1]
    assert user_msg.name == "user" and user_msg.markdown[0].value == question
    assert answer_msg.name == "assistant"
    assert answer_msg.markdown[0].value == turn["answer"].strip()
    assert turn["answer"].strip()

    sources = answer_msg.expander[0]
    assert sources.label.startswith("Sources (")
    shown = "\n".join(m.value for m in sources.markdown)
    assert "**[1]** Boiling water" in shown
    assert "Water boils at 100 degrees Celsius" in shown
    assert "> **Boiling water**" in shown, "a passage's heading is a bold line, not a page title"
    assert doc["id"] in turn["retrieved"]

    thumbs = answer_msg.feedback[0]
    assert thumbs.value is None
    thumbs.set_value(1).run()
    assert not at.exception, at.exception
    stored = rows(ui_env, "SELECT rating FROM feedback WHERE turn_id = :id", id=turn["id"])
    assert [r["rating"] for r in stored] == [1]
    assert any("rating was saved" in t.value for t in at.toast)

    # The thread is in the sidebar, and reopening it shows the stored rating.
    at = signed_in(keys["user"])
    opened = [b for b in at.sidebar.button if b.key == f"open-{turn['thread_id']}"]
    assert opened, "the thread is listed in the sidebar"
    opened[0].click().run()
    answer_msg = at.chat_message[-1]
    assert answer_msg.feedback[0].value == 1

    # Un-clicking the thumb takes the rating back.
    answer_msg.feedback[0].set_value(None).run()
    assert not at.exception, at.exception
    assert rows(ui_env, "SELECT rating FROM feedback WHERE turn_id = :id", id=turn["id"]) == []
    assert any("Rating removed" in t.value for t in at.toast)

    # A comment and a better answer, through the form under the answer.
    at.text_area(key=f"note-{turn['id']}").input("Too vague")
    at.text_area(key=f"better-{turn['id']}").input("100 °C at sea level [1].")
    at.radio(key=f"verdict-{turn['id']}").set_value("Bad answer")
    next(b for b in at.button if b.label == "Send").click().run()
    assert not at.exception, at.exception
    stored = rows(ui_env, "SELECT * FROM feedback WHERE turn_id = :id", id=turn["id"])
    assert [(r["rating"], r["comment"], r["corrected_answer"]) for r in stored] == [
        (-1, "Too vague", "100 °C at sea level [1].")
    ]

    # Deleting the thread from the sidebar deletes it in the API.
    at.button(key=f"delete-{turn['thread_id']}").click().run()
    assert not at.exception, at.exception
    gone = httpx.get(f"{ui_env.url}/threads/{turn['thread_id']}", headers=auth(keys["user"]))
    assert gone.status_code == 404
    assert [s.value for s in at.subheader] == ["New chat"]
    assert not [b for b in at.sidebar.button if b.key == f"open-{turn['thread_id']}"]


def test_upload_documents_and_see_them_ready(ui_env: Api, keys: dict[str, str]) -> None:
    at = signed_in(keys["user"], "views/documents.py", timeout=180)
    at.file_uploader[0].set_value(
        [
            ("everest.md", b"# Everest\n\nMount Everest is 8849 metres high.\n", "text/markdown"),
            ("tea.txt", b"Green tea is brewed at about 80 degrees Celsius.\n", "text/plain"),
            ("broken.pdf", b"this is not a PDF", "application/pdf"),
        ]
    )
    at.text_input[0].input("travel")
    at.button[0].click().run()
    assert not at.exception, at.exception
    at.selectbox(key="show-collection").set_value("travel").run()
    shown = texts(at)
    assert "**Everest**" in shown and "everest.md" in shown
    assert shown.count("ready · 1 chunk") == 2
    failed = [e.value for e in at.error]
    assert len(failed) == 1 and failed[0].startswith("failed: "), failed
    docs = httpx.get(
        f"{ui_env.url}/documents", params={"collection": "travel"}, headers=auth(keys["user"])
    ).json()
    assert sorted((d["filename"], d["status"]) for d in docs) == [
        ("broken.pdf", "failed"),
        ("everest.md", "ready"),
        ("tea.txt", "ready"),
    ]
    assert failed[0] == f"failed: {next(d['error'] for d in docs if d['status'] == 'failed')}"

    # Deleting one from the list removes it from the API too.
    tea = next(d for d in docs if d["filename"] == "tea.txt")
    at.button(key=f"delete-{tea['id']}").click().run()
    assert not at.exception
    left = httpx.get(
        f"{ui_env.url}/documents", params={"collection": "travel"}, headers=auth(keys["user"])
    ).json()
    assert sorted(d["filename"] for d in left) == ["broken.pdf", "everest.md"]
    assert "tea.txt" not in texts(at)


def wait_memories(api: Api, key: str, count: int, timeout: float = 180) -> list[dict[str, Any]]:
    def stored() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = httpx.get(f"{api.url}/memories", headers=auth(key)).json()
        return found if len(found) >= count else None

    return wait_until(stored, timeout, interval=1, what=f"{count} memories to be stored")


def test_delete_a_memory_then_forget_everything(ui_env: Api, keys: dict[str, str]) -> None:
    key = keys["admin"]
    response = httpx.post(
        f"{ui_env.url}/chat",
        headers=auth(key),
        json={"message": "I am allergic to peanuts. I live in Lisbon.", "stream": False},
        timeout=180,
    )
    assert response.status_code == 200, response.text
    memories = wait_memories(ui_env, key, 2)
    assert sorted(m["text"] for m in memories) == [
        "I am allergic to peanuts.",
        "I live in Lisbon.",
    ]

    at = signed_in(key, "views/memory.py")
    shown = [m.value for m in at.markdown]
    assert "I am allergic to peanuts." in shown and "I live in Lisbon." in shown
    target = next(m for m in memories if "peanuts" in m["text"])
    at.button(key=f"forget-{target['id']}").click().run()
    assert not at.exception, at.exception
    left = httpx.get(f"{ui_env.url}/memories", headers=auth(key)).json()
    assert [m["text"] for m in left] == ["I live in Lisbon."]
    assert "I am allergic to peanuts." not in [m.value for m in at.markdown]

    # "Forget everything" asks first, then empties the memory.
    next(b for b in at.button if b.label == "Forget everything").click().run()
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert not [b for b in at.button if b.label == "Yes, forget everything"]
    next(b for b in at.button if b.label == "Forget everything").click().run()
    assert httpx.get(f"{ui_env.url}/memories", headers=auth(key)).json(), "not before yes"
    next(b for b in at.button if b.label == "Yes, forget everything").click().run()
    assert not at.exception, at.exception
    assert httpx.get(f"{ui_env.url}/memories", headers=auth(key)).json() == []
    assert any("Nothing remembered yet" in i.value for i in at.info)


def test_model_page_for_admins_only(ui_env: Api, keys: dict[str, str]) -> None:
    admin = keys["admin"]
    with httpx.Client(timeout=180, headers=auth(admin)) as client:
        turn = client.post(
            f"{ui_env.url}/chat", json={"message": "Hello there", "stream": False}
        ).json()
        assert client.post(f"{ui_env.url}/turns/{turn['turn_id']}/feedback", json={"rating": 1})
        assert client.get(f"{ui_env.url}/admin/feedback").json()

    at = signed_in(admin, "views/model.py")
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Base model"] == "tiny"
    assert metrics["Adapter serving"] == "none"
    assert any("No adapter trained yet" in i.value for i in at.info)
    assert any("thumbs up" in c.value for c in at.caption)
    daily, per_version = at.get("vega_lite_chart")
    assert '"field": "day"' in daily.proto.spec and '"field": "share_up"' in daily.proto.spec
    assert '"field": "adapter_version"' in per_version.proto.spec
    assert "Signed in as an admin" in texts(at)

    user = signed_in(keys["user"])
    with pytest.raises(ValueError):
        user.switch_page("views/model.py")
