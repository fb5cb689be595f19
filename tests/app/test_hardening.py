"""Faults, bad input and abuse at the API: each answered clearly, nothing stored is lost.

One test per finding of the reliability probe: interrupted ingestion, long names on
PostgreSQL, oversized bodies, key revocation and rotation, rate limits, UTC times, the
OpenAPI error responses and strict booleans.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.store import open_database
from app.store.documents import add_document
from app.users import create_user as store_create_user
from tests.app.conftest import ROOT, Api, ModelServer, auth, create_user, start_api, stop
from tests.conftest import free_port
from tests.pg import pg_bin, postgres_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hardened(model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """An API with a small body cap and a small per-key rate limit."""
    running = start_api(
        tmp_path_factory.mktemp("hardened"),
        model_server.url,
        MAX_REQUEST_MB="1",
        MAX_UPLOAD_MB="0.5",
        RATE_LIMIT_PER_KEY="40/minute",
        MEMORY_ENABLED="false",
    )
    yield running
    stop(running.proc)


def upload(
    client: httpx.Client, api: Api, key: str, name: str, data: bytes, **form: str
) -> httpx.Response:
    return client.post(
        f"{api.url}/documents", headers=auth(key), files=[("files", (name, data))], data=form
    )


def test_interrupted_ingestion_is_failed_with_a_reason_on_start(
    model_server: ModelServer, tmp_path: Path
) -> None:
    # What a kill -9 mid-ingestion leaves: a document row still "ingesting".
    db = open_database(f"sqlite:///{tmp_path / 'flywheel.db'}")
    user, key = store_create_user(db, "ida")
    add_document(db, document_id="d1", user_id=user.id, collection="c", filename="a.txt")
    db.close()
    api = start_api(tmp_path, model_server.url, MEMORY_ENABLED="false")
    try:
        doc = httpx.get(f"{api.url}/documents/d1", headers=auth(key)).json()
        assert doc["status"] == "failed"
        assert "interrupted" in doc["error"] and "upload the file again" in doc["error"]
    finally:
        stop(api.proc)


@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed")
def test_over_long_names_are_422_with_the_limit_on_postgresql(
    model_server: ModelServer, tmp_path: Path
) -> None:
    with postgres_server(free_port()) as url:
        api = start_api(tmp_path, model_server.url, DATABASE_URL=url, MEMORY_ENABLED="false")
        try:
            key = create_user(api, "pat")
            with httpx.Client(timeout=60) as client:
                ok = upload(client, api, key, "fine.txt", b"Tea is a drink.", collection="c")
                assert ok.status_code == 202, ok.text
                long_collection = upload(client, api, key, "a.txt", b"x", collection="c" * 129)
                assert long_collection.status_code == 422
                assert "128" in long_collection.text
                long_name = upload(client, api, key, "n" * 513 + ".txt", b"x", collection="c")
                assert long_name.status_code == 422
                assert "512" in long_name.json()["detail"]
                chat = client.post(
                    f"{api.url}/chat",
                    headers=auth(key),
                    json={"message": "tea?", "collection": "c" * 129, "stream": False},
                )
                assert chat.status_code == 422
                # Nothing already stored was lost, and the API still answers.
                names = [
                    d["filename"]
                    for d in client.get(f"{api.url}/documents", headers=auth(key)).json()
                ]
                assert names == ["fine.txt"]
        finally:
            stop(api.proc)


def test_an_oversized_body_is_refused_while_it_streams_in(hardened: Api) -> None:
    key = create_user(hardened, "olga")
    sent = 0

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        nonlocal sent
        yield (
            b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n"
        )
        for _ in range(200):  # 200 MB if it were all read
            sent += 1
            yield b"x" * (1024 * 1024)

    with httpx.Client(timeout=60) as client:
        started = time.monotonic()
        try:
            r = client.post(
                f"{hardened.url}/documents",
                headers={**auth(key), "Content-Type": "multipart/form-data; boundary=b"},
                content=body(),
            )
            assert r.status_code == 413
            assert "MAX_REQUEST_MB" in r.json()["detail"]
        except httpx.TransportError:
            pass  # the server may close the connection while we are still sending
        assert sent < 200 and time.monotonic() - started < 30
        # A declared size over the cap is refused before any of the body is read (a raw
        # socket: HTTP clients will not declare a length they do not send).
        host, port = hardened.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                f"POST /documents HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 413")
        assert client.get(f"{hardened.url}/me", headers=auth(key)).status_code == 200


def test_revoked_keys_fail_at_once_and_rotation_gives_a_new_one(hardened: Api) -> None:
    admin = create_user(hardened, "root", admin=True)
    with httpx.Client(timeout=30) as client:
        made = client.post(f"{hardened.url}/admin/users", headers=auth(admin), json={"name": "rob"})
        user_id, key = made.json()["id"], made.json()["api_key"]
        assert client.get(f"{hardened.url}/me", headers=auth(key)).status_code == 200
        revoke = client.post(f"{hardened.url}/admin/users/{user_id}/revoke", headers=auth(admin))
        assert revoke.status_code == 204
        refused = client.get(f"{hardened.url}/me", headers=auth(key))
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
        rotated = client.post(f"{hardened.url}/admin/users/{user_id}/rotate", headers=auth(admin))
        new_key = rotated.json()["api_key"]
        assert client.get(f"{hardened.url}/me", headers=auth(new_key)).json()["name"] == "rob"
        # The CLI revokes too, taking effect on the very next request.
        subprocess.run(
            [sys.executable, "-m", "app.users", "revoke", "rob"],
            cwd=ROOT, env=hardened.env, check=True, capture_output=True,
        )  # fmt: skip
        assert client.get(f"{hardened.url}/me", headers=auth(new_key)).status_code == 401
        users = client.get(f"{hardened.url}/me", headers=auth(admin))
        assert users.status_code == 200  # other keys unaffected


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(hardened: Api) -> None:
    key = create_user(hardened, "quinn")
    other = create_user(hardened, "rhea")
    with httpx.Client(timeout=30) as client:
        codes = [client.get(f"{hardened.url}/me", headers=auth(key)).status_code for _ in range(45)]
        assert codes[:40] == [200] * 40 and codes[-1] == 429
        limited = client.get(f"{hardened.url}/me", headers=auth(key))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "RATE" not in limited.json()["detail"] and "retry in" in limited.json()["detail"]
        assert client.get(f"{hardened.url}/me", headers=auth(other)).status_code == 200


def test_guessing_keys_is_slowed_per_address(model_server: ModelServer, tmp_path: Path) -> None:
    api = start_api(
        tmp_path, model_server.url, RATE_LIMIT_AUTH_FAILURES="5/minute", MEMORY_ENABLED="false"
    )
    try:
        with httpx.Client(timeout=30) as client:
            codes = [
                client.get(f"{api.url}/me", headers=auth(f"fw_wrong{i}")).status_code
                for i in range(8)
            ]
            assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
            last = client.get(f"{api.url}/me", headers=auth("fw_wrong"))
            assert int(last.headers["Retry-After"]) >= 1
            assert client.get(f"{api.url}/health").status_code == 200  # open routes still open
    finally:
        stop(api.proc)


def test_every_time_carries_its_utc_offset(hardened: Api) -> None:
    key = create_user(hardened, "uma")
    with httpx.Client(timeout=120) as client:
        r = client.post(
            f"{hardened.url}/chat", headers=auth(key), json={"message": "hi", "stream": False}
        )
        assert r.status_code == 200, r.text
        upload(client, hardened, key, "t.txt", b"Tea is a drink.")
        times = [
            t["updated_at"] for t in client.get(f"{hardened.url}/threads", headers=auth(key)).json()
        ]
        times += [
            d["created_at"]
            for d in client.get(f"{hardened.url}/documents", headers=auth(key)).json()
        ]
    assert times and all(t.endswith(("Z", "+00:00")) for t in times), times


def test_openapi_lists_error_responses_and_booleans_are_strict(hardened: Api) -> None:
    schema = httpx.get(f"{hardened.url}/openapi.json").json()
    chat = schema["paths"]["/chat"]["post"]["responses"]
    assert {"401", "404", "413", "422", "429"} <= set(chat)
    docs = schema["paths"]["/documents"]["post"]["responses"]
    assert {"401", "413", "415", "429"} <= set(docs)
    assert "403" in schema["paths"]["/admin/users"]["post"]["responses"]
    metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "application/json" not in metrics and any(t.startswith("text/plain") for t in metrics)
    key = create_user(hardened, "vic")
    admin = create_user(hardened, "wes", admin=True)
    with httpx.Client(timeout=30) as client:
        zero = client.post(
            f"{hardened.url}/chat", headers=auth(key), json={"message": "hi", "stream": 0}
        )
        assert zero.status_code == 422 and "bool" in zero.text
        made = client.post(
            f"{hardened.url}/admin/users", headers=auth(admin), json={"name": "x", "admin": 0}
        )
        assert made.status_code == 422
