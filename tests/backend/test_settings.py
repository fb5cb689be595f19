"""Backend settings: defaults, environment overrides, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.settings import DEFAULT_LLM, BackendSettings


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = BackendSettings()
    assert s.data_dir == Path("data")
    assert s.llm_model == DEFAULT_LLM
    assert s.model_name == DEFAULT_LLM
    assert s.base_url == "http://127.0.0.1:8001/v1"
    assert s.adapters_root == Path("data") / "adapters"
    assert s.models_dir == Path("data") / "models"
    assert s.max_lora_rank == 16


def test_environment_overrides(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("DATA_DIR", str(tmp_path))
    clean_env.setenv("LLM_MODEL", "tiny")
    clean_env.setenv("MODEL_SERVER_PORT", "9123")
    s = BackendSettings()
    assert s.data_dir == tmp_path
    assert s.llm_model == "tiny"
    assert s.base_url == "http://127.0.0.1:9123/v1"
    assert s.adapters_root == tmp_path / "adapters"
    clean_env.setenv("MODEL_SERVER_URL", "http://vllm:8000/v1/")
    assert BackendSettings().base_url == "http://vllm:8000/v1"


def test_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LLM_MODEL=tiny\nMODEL_SERVER_PORT=9555\n")
    clean_env.chdir(tmp_path)
    s = BackendSettings()
    assert (s.llm_model, s.model_server_port) == ("tiny", 9555)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MODEL_SERVER_PORT", "not-a-port", "MODEL_SERVER_PORT"),
        ("MODEL_SERVER_PORT", "70000", "less than or equal to 65535"),
        ("MAX_LORA_RANK", "12", "not a rank vLLM accepts"),
        ("MAX_CPU_LORAS", "1", "MAX_CPU_LORAS=1 is below MAX_LORAS=4"),
        ("DEVICE", "tpu", "DEVICE"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(
    clean_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        BackendSettings()
