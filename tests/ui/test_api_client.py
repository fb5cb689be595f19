"""The UI's HTTP client against the real API: every failure is a sentence, not a trace."""

from __future__ import annotations

import pytest

from tests.app.conftest import Api
from tests.conftest import free_port
from ui.api_client import ApiClient, ApiError

pytestmark = pytest.mark.slow


def test_refused_connection() -> None:
    client = ApiClient(f"http://127.0.0.1:{free_port()}", "key")
    with pytest.raises(ApiError) as caught:
        client.threads()
    assert caught.value.status is None
    assert "Cannot reach the Flywheel API" in caught.value.message


def test_statuses_become_readable_messages(api: Api, keys: dict[str, str]) -> None:
    user = ApiClient(api.url, keys["user"])
    cases = {
        401: lambda: ApiClient(api.url, "wrong").threads(),
        403: user.serving,
        404: lambda: user.thread("no-such-thread"),
        413: lambda: user.upload([("big.txt", b"x" * (2 * 1024 * 1024))]),
        415: lambda: user.upload([("tool.exe", b"MZ")]),
    }
    expected = {
        401: "The API key was not accepted.",
        403: "This needs an admin's API key.",
        404: "Not found: it may have been deleted, or it belongs to another user. "
        "(no thread 'no-such-thread')",
        413: "The file is too large for the API (its limit is MAX_UPLOAD_MB). (big.txt is "
        "over the 1 MB limit (MAX_UPLOAD_MB))",
        415: "That file type is not supported",
    }
    for status, call in cases.items():
        with pytest.raises(ApiError) as caught:
            call()
        assert caught.value.status == status
        assert caught.value.message.startswith(expected[status]), caught.value.message
        assert "Traceback" not in caught.value.message


def test_admin_check_and_stream(api: Api, keys: dict[str, str]) -> None:
    assert ApiClient(api.url, keys["admin"]).is_admin() is True
    user = ApiClient(api.url, keys["user"])
    assert user.is_admin() is False
    events = list(user.chat_stream("Say something"))
    kinds = [e.kind for e in events]
    assert kinds[0] == "token" and kinds[-2:] == ["sources", "done"]
    done = events[-1].data
    assert done["answer"] == "".join(e.data["text"] for e in events if e.kind == "token")
    assert user.thread(done["thread_id"])["turns"][0]["id"] == done["turn_id"]
