"""Settings of the model-server side: which model, where adapters live, LoRA limits, ports.

Built once per process by :func:`get_settings`; nothing else in ``backend`` reads the
environment. The names (``LLM_MODEL``, ``MODEL_SERVER_PORT``, ``DATA_DIR``...) are part of
the public contract: the README, ``.env.example`` and the compose file use them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# vLLM accepts only these values for --max-lora-rank (vllm/config/lora.py).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

DEFAULT_LLM = "Qwen/Qwen2.5-1.5B-Instruct"
TINY_MODEL = "tiny"


class BackendSettings(BaseSettings):
    """How the model server is run and reached."""

    # Empty values mean "the default", as .env.example says.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    data_dir: Path = Field(Path("data"), alias="DATA_DIR", description="Local state root.")
    llm_model: str = Field(
        DEFAULT_LLM,
        alias="LLM_MODEL",
        description=(
            "Hub id or local path of the chat model; 'smollm2' = the real offline "
            "SmolLM2-135M-Instruct; 'tiny' = the random test model."
        ),
    )
    served_model_name: str | None = Field(
        None, alias="SERVED_MODEL_NAME", description="Name clients use; defaults to LLM_MODEL."
    )
    model_server_host: str = Field("127.0.0.1", alias="MODEL_SERVER_HOST")
    model_server_port: int = Field(8001, alias="MODEL_SERVER_PORT", ge=1, le=65535)
    model_server_url: str | None = Field(
        None,
        alias="MODEL_SERVER_URL",
        description="OpenAI-compatible base URL (…/v1); defaults to the embedded server.",
    )
    vllm_api_key: str | None = Field(
        None,
        alias="VLLM_API_KEY",
        description=(
            "Key the model server requires on /v1 (vLLM's --api-key); clients send it as a "
            "Bearer token. Empty = no key, only for a server on loopback."
        ),
    )
    adapters_dir: Path | None = Field(
        None, alias="ADAPTERS_DIR", description="Root of LoRA adapter versions."
    )
    models_cache: Path | None = Field(
        None,
        alias="MODELS_DIR",
        description="Cache of locally built models (SmolLM2, the tiny ones); DATA_DIR/models.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", alias="DEVICE")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", alias="DTYPE")
    max_loras: int = Field(4, alias="MAX_LORAS", ge=1, description="Adapters resident at once.")
    max_cpu_loras: int = Field(8, alias="MAX_CPU_LORAS", ge=1)
    max_lora_rank: int = Field(16, alias="MAX_LORA_RANK")
    allow_runtime_lora_updating: bool = Field(
        True,
        alias="VLLM_ALLOW_RUNTIME_LORA_UPDATING",
        description="Expose /v1/load_lora_adapter and /v1/unload_lora_adapter.",
    )
    max_num_seqs: int = Field(
        32,
        alias="MAX_NUM_SEQS",
        ge=1,
        description="Most sequences decoded together in one forward pass (vLLM's --max-num-seqs).",
    )
    model_server_threads: int | None = Field(
        None,
        alias="MODEL_SERVER_THREADS",
        ge=1,
        description=(
            "torch CPU threads of the embedded model server; default 1 on machines with "
            "<= 2 cores (measured ~19 tok/s vs ~1 tok/s with 2 threads when another "
            "process is busy), else torch's own default."
        ),
    )
    request_timeout_s: float = Field(120.0, alias="MODEL_REQUEST_TIMEOUT_S", gt=0)
    hf_offline: bool = Field(
        False,
        alias="HF_HUB_OFFLINE",
        description="Never reach a model hub; models come from local paths or the cache.",
    )
    hf_endpoint: str = Field(
        "https://huggingface.co",
        alias="HF_ENDPOINT",
        description="Model hub; when it does not answer, only locally cached models load.",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _rank_vllm_accepts(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(
                f"MAX_LORA_RANK={value} is not a rank vLLM accepts; use one of {VLLM_LORA_RANKS}"
            )
        return value

    @model_validator(mode="after")
    def _loras_fit(self) -> BackendSettings:
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"MAX_CPU_LORAS={self.max_cpu_loras} is below MAX_LORAS={self.max_loras}; "
                "set MAX_CPU_LORAS >= MAX_LORAS"
            )
        return self

    @property
    def server_threads(self) -> int | None:
        """Threads the embedded server gives torch (None: leave torch's default)."""
        if self.model_server_threads is not None:
            return self.model_server_threads
        return 1 if (os.cpu_count() or 1) <= 2 else None

    @property
    def adapters_root(self) -> Path:
        """Directory holding ``<name>/v<N>/`` adapter versions."""
        return self.adapters_dir or self.data_dir / "adapters"

    @property
    def models_dir(self) -> Path:
        """Cache of locally built models (SmolLM2, the tiny ones)."""
        return self.models_cache or self.data_dir / "models"

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL of the model server, ending in ``/v1``."""
        if self.model_server_url:
            return self.model_server_url.rstrip("/")
        return f"http://{self.model_server_host}:{self.model_server_port}/v1"

    @property
    def model_name(self) -> str:
        """The name the base model is served under."""
        return self.served_model_name or self.llm_model


@lru_cache(maxsize=1)
def get_settings() -> BackendSettings:
    """The process's backend settings, read from the environment and ``.env`` once."""
    return BackendSettings()
