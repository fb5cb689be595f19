"""Settings of the trainer process: where the store and runs live, which judge to ask.

Built once per process by :func:`get_settings`; nothing else in ``rl_trainer`` reads the
environment. The model server's address, the adapters root and the base model come from
the backend's settings, so the trainer writes adapters exactly where the server loads
them from. ``DATA_DIR`` and ``DATABASE_URL`` mean what they mean for the API.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    """Where the trainer reads turns, writes runs and finds its judge."""

    # Empty values mean "the default", as .env.example says.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    data_dir: Path = Field(Path("data"), alias="DATA_DIR", description="Local state root.")
    database_url: str | None = Field(
        None,
        alias="DATABASE_URL",
        description="SQLAlchemy URL; defaults to SQLite in the data directory (as the API).",
    )
    judge_url: str | None = Field(
        None,
        alias="JUDGE_URL",
        description="OpenAI-compatible base URL (…/v1) of the judge; defaults to the model server.",
    )
    judge_api_key: str | None = Field(
        None,
        alias="JUDGE_API_KEY",
        description="Bearer key of the judge at JUDGE_URL (the model server's key is not sent).",
    )
    judge_model: str | None = Field(
        None,
        alias="JUDGE_MODEL",
        description="Model the judge is asked with; defaults to the served base model.",
    )
    adapter_name: str = Field(
        "flywheel",
        alias="ADAPTER_NAME",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of the adapter line; versions are served as <name>-v<N>.",
    )
    train_base_model: str | None = Field(
        None,
        alias="TRAIN_BASE_MODEL",
        description="Local path or hub id to train on; defaults to LLM_MODEL of the server.",
    )
    datasets_dir: Path = Field(
        Path("../shared/data"),
        alias="DATASETS_DIR",
        description="Where recipes' relative dataset paths (e.g. gsm8k/train.jsonl) resolve.",
    )
    # The online loop (``rl-trainer online``) and its canary trials.
    online_recipe: str | None = Field(
        None, alias="ONLINE_RECIPE", description="Recipe of each online round (bundled or path)."
    )
    online_min_signals: int = Field(
        20, ge=1, alias="ONLINE_MIN_SIGNALS", description="New ratings that start a round."
    )
    online_interval_s: float = Field(
        3600.0,
        gt=0,
        alias="ONLINE_INTERVAL_S",
        description="A round also starts this long after the last one, if any signal arrived.",
    )
    online_poll_s: float = Field(
        10.0, gt=0, alias="ONLINE_POLL_S", description="How often the loop looks at the store."
    )
    online_max_staleness: int = Field(
        2,
        ge=0,
        alias="ONLINE_MAX_STALENESS",
        description="Skip turns answered by versions more than this many versions old.",
    )
    online_lock_ttl_s: float = Field(
        60.0, gt=0, alias="ONLINE_LOCK_TTL_S", description="A dead trainer's lock lapses after."
    )
    canary_share: float = Field(
        0.2, gt=0, le=1, alias="CANARY_SHARE", description="Share of users a canary serves."
    )
    canary_min_rated: int = Field(
        20, ge=1, alias="CANARY_MIN_RATED", description="Rated canary turns before promoting."
    )
    canary_max_rated: int = Field(
        100,
        ge=1,
        alias="CANARY_MAX_RATED",
        description="Rated canary turns after which an undecided trial is rolled back.",
    )
    canary_alpha: float = Field(
        0.05, gt=0, lt=1, alias="CANARY_ALPHA", description="Significance of 'canary is worse'."
    )
    canary_margin: float = Field(
        0.05,
        ge=0,
        le=1,
        alias="CANARY_MARGIN",
        description="Thumbs-down rate a canary may exceed control's by and still be promoted.",
    )
    canary_max_error_rise: float = Field(
        0.05,
        ge=0,
        le=1,
        alias="CANARY_MAX_ERROR_RISE",
        description="Error-rate rise that rolls back.",
    )

    @property
    def db_url(self) -> str:
        """The database URL in force."""
        from app.store.db import default_database_url

        return self.database_url or default_database_url(self.data_dir)

    @property
    def runs_dir(self) -> Path:
        """Directory holding one sub-directory per trainer run."""
        return self.data_dir / "runs"


@lru_cache(maxsize=1)
def get_settings() -> TrainerSettings:
    """The process's trainer settings, read from the environment and ``.env`` once."""
    return TrainerSettings()
