"""A model-server restart does not silently drop the active adapter.

The store says which adapter serves; the model server forgets its adapters when it
restarts. The API loads the active version again (on start, on ``/health`` and every
``ADAPTER_CHECK_S``), says ``degraded`` while it cannot, and the trainer's ``promote`` of
the already-active version loads it again too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.store import open_database
from backend.client import ModelClient
from rl_trainer.publish import promote, publish
from tests.app.conftest import ROOT, create_user, start_api, stop, wait_http
from tests.app.sse import chat_stream
from tests.backend.conftest import make_adapter
from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.slow


class Restartable:
    """The embedded model server on a fixed port, so it can be stopped and started again."""

    def __init__(self, model: Path, adapters: Path) -> None:
        self.model, self.adapters, self.port = model, adapters, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "backend.server", "--model", str(self.model),
                "--served-model-name", "tiny", "--port", str(self.port),
                "--adapters-root", str(self.adapters), "--log-level", "warning",
            ],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{self.port}/health", self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def server(tiny_chat_model: Path, tmp_path: Path) -> Iterator[Restartable]:
    srv = Restartable(tiny_chat_model, tmp_path / "adapters")
    srv.adapters.mkdir()
    srv.start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.kill()


def test_the_active_adapter_survives_a_model_server_restart(
    server: Restartable, tiny_chat_model: Path, tmp_path: Path
) -> None:
    api = start_api(tmp_path / "api", server.url, MEMORY_ENABLED="false", ADAPTER_CHECK_S="1")
    db = open_database(api.db_url())
    try:
        key = create_user(api, "sam")
        trained = make_adapter(tiny_chat_model, tmp_path / "trained", seed=3)
        row = publish(
            db, trained, {}, name="flywheel", adapters_root=server.adapters, base_model="tiny"
        )
        with ModelClient(server.url) as client:
            promote(db, client, row)
        with httpx.Client(timeout=120) as http:

            def served_by() -> str | None:
                events = dict(chat_stream(http, api.url, key, "hello there"))
                assert "done" in events, events
                return events["done"]["adapter_version"]

            assert served_by() == "flywheel-v1"

            server.kill()  # the server forgets every adapter it had loaded
            server.start()
            wait_until(lambda: http.get(f"{api.url}/health").status_code == 200, 60)
            assert served_by() == "flywheel-v1"  # loaded again, not a 503

            # While the version cannot be loaded, /health says so instead of "ok".
            server.kill()
            moved = tmp_path / "moved-away"
            shutil.move(row.path, moved)
            server.start()
            health = http.get(f"{api.url}/health")
            assert health.status_code == 503
            adapter = health.json()["model_server"]["adapter"]
            assert adapter == {"name": "flywheel-v1", "served": False, "error": adapter["error"]}
            shutil.move(moved, row.path)
            # Back in place, the next check loads it (the checks run every ADAPTER_CHECK_S;
            # on a busy machine one may still be under way when the files return).
            wait_until(lambda: http.get(f"{api.url}/health").status_code == 200, 60)

        # The trainer's promote of the active version loads it again after a restart (the
        # API is stopped first, so that its own check cannot be what loaded it).
        stop(api.proc)
        server.kill()
        server.start()
        with ModelClient(server.url) as client:
            assert "flywheel-v1" not in {m.id for m in client.list_models()}
            promote(db, client, row)
            assert "flywheel-v1" in {m.id for m in client.list_models()}
    finally:
        db.close()
        stop(api.proc)
