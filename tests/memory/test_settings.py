"""Memory settings: defaults, the model-server URL rules, and mem0's process variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory.settings import MemorySettings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("MEMORY_") or name in {"EMBEDDING_MODEL", "SERVED_MODEL_NAME"}:
            clean_env.delenv(name)
    return clean_env


def test_defaults(env: pytest.MonkeyPatch, minilm_path: Path) -> None:
    settings = MemorySettings()

    assert settings.enabled is True
    assert settings.collection == "flywheel_memories"
    with pytest.raises(ValueError, match="MEMORY_LLM_URL"):
        _ = settings.llm_base_url  # only the API knows the model server: it must say
    assert Path(settings.embedder_path()) == minilm_path
    assert settings.embedding_dims == 384
    assert settings.fallback_explicit is False
    assert settings.extraction_prompt == "compact"
    assert settings.history_db_path == Path("data") / "memory" / "history.db"


def test_extraction_follows_the_model_server(env: pytest.MonkeyPatch) -> None:
    # What the API hands over: the model server's URL, key and the served model's name.
    served = MemorySettings().for_server("http://vllm:8000/v1/", "smollm2", "server-key")
    assert served.llm_base_url == "http://vllm:8000/v1"
    assert served.llm_model_name == "smollm2"
    assert served.llm_api_key == "server-key"

    # A dedicated extraction server wins over the API's.
    env.setenv("MEMORY_LLM_URL", "http://extractor:9000/v1")
    env.setenv("MEMORY_LLM_MODEL", "Qwen/Qwen2.5-7B-Instruct")
    own = MemorySettings().for_server("http://vllm:8000/v1", "smollm2", "server-key")
    assert own.llm_base_url == "http://extractor:9000/v1"
    assert own.llm_api_key == "not-needed", "the model server's key is not sent elsewhere"
    assert own.llm_model_name == "Qwen/Qwen2.5-7B-Instruct"


def test_switches(env: pytest.MonkeyPatch) -> None:
    env.setenv("MEMORY_ENABLED", "false")
    env.setenv("MEMORY_FALLBACK_EXPLICIT", "true")
    env.setenv("MEMORY_TIMEOUT_S", "2.5")
    settings = MemorySettings()
    assert (settings.enabled, settings.fallback_explicit, settings.timeout_s) == (False, True, 2.5)


def test_import_is_light() -> None:
    heavy = "('mem0', 'sentence_transformers', 'torch')"
    code = f"import json, sys, memory; print(json.dumps([m for m in {heavy} if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == []


BUILD = """
import json, sys
from qdrant_client import QdrantClient
from memory import MemorySettings, UserMemory
data = sys.argv[1]
client = QdrantClient(path=data + "/qdrant")
settings = MemorySettings(DATA_DIR=data, EMBEDDING_MODEL=sys.argv[2])
memories = UserMemory(settings.for_server("http://127.0.0.1:9/v1", "tiny"), client)
memories.warm_up()
import mem0.memory.setup as setup, mem0.memory.telemetry as telemetry
print(json.dumps({"mem0_dir": setup.mem0_dir, "telemetry": telemetry.MEM0_TELEMETRY}))
memories.close()
client.close()
"""


@pytest.mark.slow
def test_mem0_files_stay_in_the_data_dir_and_telemetry_is_off(
    tmp_path: Path, minilm_path: Path
) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    child_env = {
        k: v for k, v in os.environ.items() if k not in {"MEM0_TELEMETRY", "MEM0_DIR", "DATA_DIR"}
    }
    child_env["HOME"] = str(home)
    out = subprocess.run(
        [sys.executable, "-c", BUILD, str(data), str(minilm_path)],
        cwd=tmp_path,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])

    assert seen["telemetry"] is False
    assert Path(seen["mem0_dir"]) == (data / "memory").resolve()
    assert (data / "memory" / "history.db").is_file()
    assert not (home / ".mem0").exists()
