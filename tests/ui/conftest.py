"""The real stack on loopback for the UI tests, serving the tiny DEMO model.

The model server is started with ``--model tiny`` (as ``make run`` falls back to when no
real model can be loaded), so ``/health`` reports ``demo_model`` and every page must
show the banner. The API runs with ``MEMORY_FALLBACK_EXPLICIT`` so that a user's
first-person statement becomes a memory even though the tiny model cannot extract one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from streamlit.testing.v1 import AppTest

from tests.app.conftest import (
    ROOT,
    Api,
    ModelServer,
    auth,
    create_user,
    start_api,
    start_model_server,
    stop,
    wait_ingested,
)

HOME = ROOT / "ui" / "Home.py"
DOC = (
    "# Boiling water\n\nWater boils at 100 degrees Celsius at sea level. At the top of "
    "Mount Everest it boils at about 70 degrees Celsius, because the air pressure is lower.\n"
)


@pytest.fixture(scope="session")
def model_server(
    tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """``python -m backend.server --model tiny``: the demo model, built in this session."""
    data = tmp_path_factory.mktemp("demo-data")
    (data / "models").mkdir()
    (data / "models" / tiny_chat_model.name).symlink_to(tiny_chat_model, target_is_directory=True)
    adapters = tmp_path_factory.mktemp("adapters")
    server = start_model_server("tiny", adapters, DATA_DIR=str(data))
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def api(model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API over the demo model, keeping explicit statements as memories."""
    running = start_api(
        tmp_path_factory.mktemp("ui-api-data"),
        model_server.url,
        MEMORY_FALLBACK_EXPLICIT="true",
        MEMORY_TIMEOUT_S="120",
        MAX_UPLOAD_MB="1",
        # Short answers and extractions: the tiny model's words carry no meaning anyway.
        AGENT_MAX_TOKENS="48",
        MEMORY_LLM_MAX_TOKENS="32",
    )
    yield running
    stop(running.proc)


@pytest.fixture(scope="session")
def ui_env(api: Api) -> Iterator[Api]:
    """Point the UI (run in this process by AppTest) at the test API."""
    from ui.settings import get_settings

    old = os.environ.get("FLYWHEEL_API_URL")
    os.environ["FLYWHEEL_API_URL"] = api.url
    get_settings.cache_clear()
    yield api
    if old is None:
        os.environ.pop("FLYWHEEL_API_URL", None)
    else:
        os.environ["FLYWHEEL_API_URL"] = old
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def keys(api: Api) -> dict[str, str]:
    """API keys of an admin and of a plain user."""
    return {"admin": create_user(api, "ui-admin", admin=True), "user": create_user(api, "ui-user")}


def rows(api: Api, sql: str, **params: Any) -> list[Any]:
    """Rows of a query on the API's database."""
    engine = create_engine(api.db_url())
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).mappings())
    finally:
        engine.dispose()


def app(timeout: float = 60) -> AppTest:
    """The UI from its entry script, as ``streamlit run ui/Home.py`` starts it."""
    return AppTest.from_file(HOME, default_timeout=timeout)


def signed_in(key: str, page: str | None = None, timeout: float = 60) -> AppTest:
    """The UI after signing in with ``key`` through the form, optionally on ``page``."""
    at = app(timeout).run()
    at.text_input[0].input(key)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    if page is not None:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def upload_ready(api: Api, key: str, name: str, body: bytes) -> dict[str, Any]:
    """Upload a document through the API and wait until it is ingested."""

    with httpx.Client(timeout=60) as client:
        response = client.post(
            f"{api.url}/documents", headers=auth(key), files=[("files", (name, body))]
        )
        assert response.status_code == 202, response.text
        doc_id = response.json()["documents"][0]["id"]
        doc = wait_ingested(client, api.url, key, doc_id)
    assert doc["status"] == "ready", doc
    return doc


def loop_now(api: Api, key: str) -> dict[str, Any]:
    """``GET /admin/loop`` as ``key``."""
    response = httpx.get(f"{api.url}/admin/loop", headers=auth(key), timeout=30)
    assert response.status_code == 200, response.text
    loop: dict[str, Any] = response.json()
    return loop


def add_adapter_version(
    api: Api, name: str, version: int, manifest: dict[str, Any], *, canary_share: float = 0.0
) -> str:
    """Record an adapter version in the API's store (no files: it never serves); its served name.

    With ``canary_share`` it goes on canary trial, as the loop puts a gated version.
    """
    from app.store import open_database
    from app.store.adapters import add_version, merge_manifest
    from app.store.loop import start_canary

    db = open_database(api.db_url())
    try:
        row = add_version(
            db,
            name=name,
            version=version,
            path=f"/nowhere/{name}-v{version}",
            base_model="tiny",
            manifest=manifest,
        )
        if canary_share:
            start_canary(db, row.id, canary_share)
            trial = manifest.get("canary") or {}
            if trial:  # the loop's checks: merged over what start_canary wrote
                stored = merge_manifest(db, row.id, {}) or {}
                merge_manifest(db, row.id, {"canary": {**stored["canary"], **trial}})
        return row.served_name
    finally:
        db.close()


def remove_adapter_versions(api: Api, name: str) -> None:
    """Delete every version of ``name`` from the API's store."""
    engine = create_engine(api.db_url())
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM adapter_versions WHERE name = :name"), {"name": name})
    finally:
        engine.dispose()
