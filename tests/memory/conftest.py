"""Fixtures for memory tests: one real mem0 over real Qdrant local mode per session, and a
scripted OpenAI-compatible extraction server on loopback standing in for a capable LLM."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from memory import MemorySettings, UserMemory
from tests.conftest import free_port

# remember() budget in tests: long enough for a loaded 2-core machine, short enough to test.
TIMEOUT_S = 3.0


def facts(*texts: str) -> str:
    """An extraction reply in mem0's format."""
    return json.dumps({"memory": [{"text": text} for text in texts]})


@dataclass
class Responder:
    """An OpenAI-compatible ``/v1/chat/completions`` answering with a scripted reply."""

    port: int
    reply: str | Callable[[dict[str, Any]], str] = field(default_factory=lambda: facts())
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                responder.requests.append(body)
                time.sleep(responder.delay_s)
                reply = responder.reply
                content = reply(body) if callable(reply) else reply
                payload = json.dumps(
                    {
                        "id": f"chatcmpl-{uuid.uuid4().hex}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port: the model server is down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture(scope="session")
def responder_server() -> Iterator[Responder]:
    server = Responder(port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def responder(responder_server: Responder) -> Iterator[Responder]:
    """The loopback extraction server, reset to answer "nothing to remember" at once."""
    responder_server.reply = facts()
    responder_server.delay_s = 0.0
    responder_server.requests.clear()
    yield responder_server
    if responder_server._server is None:
        responder_server.start()


@pytest.fixture(scope="session")
def memory_settings(
    tmp_path_factory: pytest.TempPathFactory, minilm_path: Path, responder_server: Responder
) -> MemorySettings:
    return MemorySettings(
        DATA_DIR=tmp_path_factory.mktemp("memory-data"),
        EMBEDDING_MODEL=str(minilm_path),
        MEMORY_LLM_URL=responder_server.url,
        MEMORY_LLM_MODEL="extractor-under-test",
        MEMORY_TIMEOUT_S=TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def qdrant(memory_settings: MemorySettings) -> Iterator[QdrantClient]:
    """The process's single Qdrant client, in local mode."""
    client = QdrantClient(path=str(memory_settings.data_dir / "qdrant"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def memories(memory_settings: MemorySettings, qdrant: QdrantClient) -> Iterator[UserMemory]:
    """Real mem0 over real Qdrant and the real embedder, built once (the embedder is slow)."""
    store = UserMemory(memory_settings, qdrant)
    store.warm_up()
    yield store
    store.close()


@pytest.fixture
def user() -> str:
    """A fresh user id, so tests sharing the session store never see each other's data."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def other_user() -> str:
    return f"other-{uuid.uuid4().hex[:12]}"
