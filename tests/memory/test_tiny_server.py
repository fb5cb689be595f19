"""Extraction by the tiny model behind the embedded model server: garbage in, nothing stored.

The tiny model has random weights, so whatever it answers in JSON mode is not a list of
facts: this is the "small served model returns unusable output" case, end to end over
the real server and the real OpenAI-compatible API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from memory import MemorySettings, UserMemory
from tests.backend.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_server(
    tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("tiny-server")
    server = start_server(tiny_chat_model, data_dir / "adapters", data_dir)
    yield server
    stop_server(server)


def test_tiny_model_output_stores_nothing_and_raises_nothing(
    tiny_server: Server,
    memory_settings: MemorySettings,
    qdrant: QdrantClient,
    user: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = memory_settings.model_copy(
        update={
            "llm_url": tiny_server.base_url,
            "llm_model": "tiny",
            "collection": "tiny_extraction",
            "timeout_s": 120.0,
            "extraction_max_tokens": 48,
        }
    )
    memories = UserMemory(settings, qdrant)
    turn = [
        {"role": "user", "content": "I'm vegetarian and my project is in Rust."},
        {"role": "assistant", "content": "Noted."},
    ]
    try:
        with caplog.at_level(logging.WARNING, logger="memory"):
            assert memories.remember(user, turn) == []
        assert memories.list(user) == []
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        # The request succeeded and its reply was rejected (not a transport error).
        assert any(user in m and "stored 0 fact(s)" in m for m in warnings), warnings
    finally:
        memories.close()
