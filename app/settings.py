"""Settings of the API process: database, ports, where local state lives.

Built once per process by :func:`get_settings`; nothing else in ``app`` reads the
environment. ``API_PORT``, ``UI_PORT`` and ``DATA_DIR`` are part of the public contract.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppSettings(BaseSettings):
    """How the API is served and where it keeps its state."""

    # Empty values mean "the default", as .env.example says.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    data_dir: Path = Field(Path("data"), alias="DATA_DIR", description="Local state root.")
    database_url: str | None = Field(
        None,
        alias="DATABASE_URL",
        description="SQLAlchemy URL; defaults to SQLite in the data directory.",
    )
    api_host: str = Field("127.0.0.1", alias="API_HOST")
    api_port: int = Field(8000, alias="API_PORT", ge=1, le=65535)
    ui_host: str = Field("127.0.0.1", alias="UI_HOST")
    ui_port: int = Field(8501, alias="UI_PORT", ge=1, le=65535)
    admin_name: str = Field("admin", alias="ADMIN_NAME", description="Local admin made on start.")
    max_upload_mb: float = Field(25.0, alias="MAX_UPLOAD_MB", gt=0)
    max_request_mb: float = Field(
        110.0,
        alias="MAX_REQUEST_MB",
        gt=0,
        description="Largest request body, counted as it streams in (several uploads at once).",
    )
    rate_limits: bool = Field(True, alias="RATE_LIMITS", description="Enforce the limits below.")
    rate_limit_per_key: str = Field(
        "300/minute", alias="RATE_LIMIT_PER_KEY", description="Requests per API key."
    )
    rate_limit_per_ip: str = Field(
        "1200/minute", alias="RATE_LIMIT_PER_IP", description="Requests per client address."
    )
    rate_limit_auth_failures: str = Field(
        "30/minute",
        alias="RATE_LIMIT_AUTH_FAILURES",
        description="Wrong or revoked keys per client address before it must wait.",
    )
    default_collection: str = Field("default", alias="DEFAULT_COLLECTION", min_length=1)
    # Agent behaviour.
    # 3, not 5: on the shared ClapNQ dev set the gold passage ranks first for 142 of 150
    # answerable questions and within the top 3 for all 150. Through python -m app.eval on
    # SmolLM2 (the same 40 + 40 questions), 3 sources gave token recall 0.386 against 0.312
    # with 5, gold passage cited 83% vs 72%, p50 latency 6.6 s vs 8.2 s: fewer, shorter sources
    # distract a small model less. On all 150 + 150: recall 0.335 vs 0.296, valid citations
    # 0.979 vs 0.948. Raise it for a capable model or answers spread over many passages.
    top_k: int = Field(3, alias="AGENT_TOP_K", ge=1, le=50, description="Sources per answer.")
    memory_k: int = Field(5, alias="AGENT_MEMORY_K", ge=0, le=50)
    history_messages: int = Field(6, alias="AGENT_HISTORY_MESSAGES", ge=0)
    min_relevance: float = Field(
        0.0, alias="AGENT_MIN_RELEVANCE", description="Drop chunks scoring below this."
    )
    # Tuned on the shared ClapNQ dev set with MiniLM (see app/agent/evidence.py): declines
    # 63% of unanswerable questions, 7% of answerable ones. 0 turns the check off.
    min_evidence: float = Field(
        0.60,
        alias="AGENT_MIN_EVIDENCE",
        ge=0,
        description="Decline when the best passage's evidence (dense similarity + 0.2 x "
        "the question's content words it holds) is below this.",
    )
    # Off by default: on SmolLM2 the check is worse than chance (30 + 30 ClapNQ dev questions
    # the evidence check lets through: "yes" for 20% of answerable, 40% of unanswerable,
    # AUC 0.33 on the yes/no margin). Worth turning on with a capable model.
    passage_check: bool = Field(
        False,
        alias="AGENT_PASSAGE_CHECK",
        description="Before answering, ask the model (a constrained yes/no) whether the best "
        "passage answers the question; decline on no.",
    )
    # Off: on SmolLM2 it declined more answerable questions than unanswerable ones. Through
    # python -m app.eval on ClapNQ dev, 40 + 40 questions: 4 unanswerable, 2 answerable
    # (both wrong); 150 + 150: 6 unanswerable, 10 answerable (wrongly declined 9% -> 16%).
    # A model that writes its own [n] is never second-guessed by it.
    decline_ungrounded: bool = Field(
        False,
        alias="AGENT_DECLINE_UNGROUNDED",
        description="When the model cites no source and no sentence of its answer is "
        "supported by any source (not even at the lowest bar of the after-the-fact "
        "citations), reply that the documents do not hold the answer instead.",
    )
    # On: replaying the 22 ClapNQ dev questions SmolLM2 had answered without support, the
    # retry was needed 11 times and found a supported answer 7 times.
    retry_unsupported: bool = Field(
        True,
        alias="AGENT_RETRY_UNSUPPORTED",
        description="When an answer cites nothing and no source supports any sentence of "
        "it (often a small model's false start, such as 'The answer is:'), ask once more "
        "with another seed and keep the second answer if a source supports it.",
    )
    temperature: float = Field(0.2, alias="AGENT_TEMPERATURE", ge=0, le=2)
    max_tokens: int = Field(512, alias="AGENT_MAX_TOKENS", ge=1)
    # Measured on SmolLM2 with the answer prompt and each question's gold passage (ClapNQ
    # dev, 12 questions at 400 tokens): no penalty 2 loops, 5 at the cap, token recall
    # 0.37; frequency 0.3: 0, 1, 0.44 (0.6: 0, 0, 0.43). A repetition penalty, which also
    # penalises the sources' words, cut recall from 0.40 to 0.25 (12 others), so it is off.
    frequency_penalty: float = Field(
        0.3, alias="AGENT_FREQUENCY_PENALTY", ge=-2, le=2, description="Per repeated token."
    )
    repetition_penalty: float = Field(1.0, alias="AGENT_REPETITION_PENALTY", ge=0.01, le=2)
    # SmolLM2 often writes "The answer is:" and ends there. Measured on 20 answerable ClapNQ
    # dev questions (their top 5 passages, loops stopped): token recall 0.23 without,
    # 0.32 with 32 (F1 0.19 -> 0.24); the answers it forces out are mostly the sources'
    # words. Loops before the stop: 5 -> 6 of 20, all of them stopped by app/agent/loops.py.
    # ClapNQ's references run to 44 words (median): through python -m app.eval on 40 + 40
    # dev questions, 32 gave token recall 0.279, 64 gave 0.304 (no answer ending in a loop).
    min_tokens: int = Field(
        64,
        alias="AGENT_MIN_TOKENS",
        ge=0,
        description="No end of the answer before this many tokens (vLLM's min_tokens).",
    )
    model_wait_s: float = Field(
        600.0, alias="MODEL_WAIT_S", ge=0, description="How long the API waits for the model."
    )
    online_training: bool = Field(
        False,
        alias="ONLINE_TRAINING",
        description="make run also starts `rl-trainer online` (the loop trains by itself).",
    )
    adapter_check_s: float = Field(
        10.0,
        alias="ADAPTER_CHECK_S",
        gt=0,
        description="How often the API checks that the model server has the active adapter.",
    )
    torch_threads: int = Field(
        1,
        alias="API_TORCH_THREADS",
        ge=0,
        description="torch threads in the API process; 0 = torch's default.",
    )

    @property
    def db_url(self) -> str:
        """The database URL in force."""
        from app.store.db import default_database_url

        return self.database_url or default_database_url(self.data_dir)

    @property
    def checkpoints_path(self) -> str:
        """SQLite file of the agent's per-thread checkpoints (when not on PostgreSQL)."""
        return str(self.data_dir / "checkpoints.db")

    def sampling(self) -> dict[str, float | int]:
        """The answer's sampling options, neutral penalties left out.

        Servers other than vLLM may refuse fields they do not know (``repetition_penalty``).
        """
        options: dict[str, float | int] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.frequency_penalty != 0.0:
            options["frequency_penalty"] = self.frequency_penalty
        if self.repetition_penalty != 1.0:
            options["repetition_penalty"] = self.repetition_penalty
        if self.min_tokens:
            options["min_tokens"] = min(self.min_tokens, self.max_tokens)
        return options

    @field_validator("rate_limit_per_key", "rate_limit_per_ip", "rate_limit_auth_failures")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a rate; write e.g. '300/minute' or '10/second'"
            ) from exc
        return value

    @property
    def max_request_bytes(self) -> int:
        """The largest request body accepted, in bytes."""
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        """The largest upload accepted, in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def api_url(self) -> str:
        """Where the API answers."""
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def ui_url(self) -> str:
        """Where the UI answers."""
        return f"http://{self.ui_host}:{self.ui_port}"


@lru_cache(maxsize=1)
def get_settings() -> AppSettings:
    """The process's API settings, read from the environment and ``.env`` once."""
    return AppSettings()
