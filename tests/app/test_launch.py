"""``make run``'s launcher: every service starts on loopback, the URLs and the admin's key
are printed, and one Ctrl-C stops them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import ROOT
from tests.conftest import free_port, wait_until


@pytest.mark.parametrize("online", ["true", "false"])
def test_the_online_trainer_is_an_opt_in_service(
    online: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import launch
    from app.settings import get_settings as app_settings
    from backend.settings import get_settings as backend_settings

    monkeypatch.setenv("ONLINE_TRAINING", online)
    monkeypatch.delenv("MODEL_SERVER_URL", raising=False)
    app_settings.cache_clear()
    backend_settings.cache_clear()
    try:
        commands = {s.name: s.command for s in launch.services()}
    finally:
        app_settings.cache_clear()
        backend_settings.cache_clear()
    if online == "true":
        assert commands["trainer"].endswith("-m rl_trainer.cli online")
    else:
        assert "trainer" not in commands
    assert {"model", "api", "ui"} <= commands.keys()


@pytest.mark.slow
def test_make_run_starts_the_stack_and_one_interrupt_stops_it(tmp_path: Path) -> None:
    ports = {"MODEL_SERVER_PORT": free_port(), "API_PORT": free_port(), "UI_PORT": free_port()}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "DATA_DIR": str(tmp_path),
        "LLM_MODEL": "tiny",
        "HF_HUB_OFFLINE": "1",
        "MEMORY_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MODEL_SERVER_URL", None)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.launch"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            api = f"http://127.0.0.1:{ports['API_PORT']}"

            def running() -> None:
                assert proc.poll() is None, log.read_text()

            def answers(url: str) -> bool:
                return httpx.get(url, timeout=2).status_code == 200

            wait_until(lambda: answers(f"{api}/health"), 300, interval=1, alive=running)
            text = log.read_text()
            assert f"API: {api}" in text
            assert f"Model server: http://127.0.0.1:{ports['MODEL_SERVER_PORT']}/v1" in text
            key = re.search(r"API key: (fw_\S+)", text)
            assert key, text
            # The printed key is a working admin key, and the model is the demo one.
            headers = {"Authorization": f"Bearer {key.group(1)}"}
            assert httpx.get(f"{api}/admin/model", headers=headers).status_code == 200
            assert httpx.get(f"{api}/health").json()["demo_model"] is True
            if (ROOT / "ui" / "Home.py").exists():
                ui = f"http://127.0.0.1:{ports['UI_PORT']}"
                assert f"UI: {ui}" in text
                wait_until(lambda: answers(f"{ui}/_stcore/health"), 60, interval=1, alive=running)
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                raise
    for port in ports.values():  # everything stopped: nothing listens any more
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
