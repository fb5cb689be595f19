"""A real stack on loopback for the API tests: the embedded model server with the tiny
model, and the API as its own process over SQLite and Qdrant local mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_SERVER_KEY, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Wait until ``url`` answers (any status), failing fast if ``proc`` died."""

    def alive() -> None:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{out[-4000:]}")

    wait_until(lambda: httpx.get(url, timeout=2), timeout, interval=0.3, what=url, alive=alive)


def wait_ingested(
    client: httpx.Client, api_url: str, key: str, doc_id: str, timeout: float = 120
) -> dict[str, Any]:
    """The document once its ingestion has ended (ready or failed)."""

    def finished() -> dict[str, Any] | None:
        doc: dict[str, Any] = client.get(f"{api_url}/documents/{doc_id}", headers=auth(key)).json()
        return doc if doc["status"] != "ingesting" else None

    return wait_until(finished, timeout, interval=0.3, what=f"document {doc_id} to be ingested")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server as Ctrl-C would, then for good."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ModelServer:
    """The embedded model server running the tiny model."""

    url: str
    proc: subprocess.Popen[bytes]
    adapters: Path
    key: str = ""  # the VLLM_API_KEY it requires on /v1; empty = none


def start_model_server(model: Path | str, adapters: Path, **env: str) -> ModelServer:
    """Start ``python -m backend.server`` on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backend.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--adapters-root",
            str(adapters),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return ModelServer(f"http://127.0.0.1:{port}/v1", proc, adapters, env.get("VLLM_API_KEY", ""))


def start_responder(slow: bool = False) -> tuple[str, subprocess.Popen[bytes]]:
    """Start the scripted model (``tests/app/responder.py``); its base URL and process."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.app.responder",
            "--port",
            str(port),
            *(["--slow"] if slow else []),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return f"http://127.0.0.1:{port}/v1", proc


@dataclass
class Api:
    """The API process and where it keeps its state."""

    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    env: dict[str, str]

    def db_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'flywheel.db'}"


def start_api(data_dir: Path, model_url: str, **extra: str) -> Api:
    """Start ``python -m app`` on a free port against ``model_url``."""
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "API_PORT": str(port),
        "MODEL_SERVER_URL": model_url,
        # The shared model server requires this key, as vLLM with --api-key does: every
        # API test proves the API (chat, memory, adapters) sends it.
        "VLLM_API_KEY": MODEL_SERVER_KEY,
        "MODEL_WAIT_S": "30",
        "HF_HUB_OFFLINE": "1",
        "MEM0_TELEMETRY": "False",
        **extra,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=240)
    return Api(f"http://127.0.0.1:{port}", proc, data_dir, env)


@pytest.fixture(scope="session")
def api(model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    running = start_api(tmp_path_factory.mktemp("api-data"), model_server.url)
    yield running
    stop(running.proc)


def create_user(api: Api, name: str, admin: bool = False) -> str:
    """A new user's API key, made with the CLI a person would use."""
    out = subprocess.run(
        [sys.executable, "-m", "app.users", "create", name, *(["--admin"] if admin else [])],
        cwd=ROOT,
        env=api.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
