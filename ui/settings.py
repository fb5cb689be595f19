"""Settings of the UI process: where the API answers and the key to prefill.

Built once per process by :func:`get_settings`; nothing else in ``ui`` reads the
environment. ``FLYWHEEL_API_URL`` wins; otherwise the URL is built from ``API_HOST`` and
``API_PORT``, the same variables the API itself is started with, so ``make run`` needs
no extra setting.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class UiSettings(BaseSettings):
    """How the UI reaches the API."""

    # Empty values mean "the default", as .env.example says.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    api_url_override: str = Field(
        "", alias="FLYWHEEL_API_URL", description="Base URL of the API; empty = API_HOST:API_PORT."
    )
    api_host: str = Field("127.0.0.1", alias="API_HOST")
    api_port: int = Field(8000, alias="API_PORT", ge=1, le=65535)
    api_key: str = Field(
        "", alias="FLYWHEEL_API_KEY", description="Prefills the sign-in box (never required)."
    )
    request_timeout_s: float = Field(
        30.0, alias="UI_REQUEST_TIMEOUT_S", gt=0, description="Timeout of an ordinary API call."
    )
    chat_timeout_s: float = Field(
        600.0, alias="UI_CHAT_TIMEOUT_S", gt=0, description="Longest wait for a streamed answer."
    )
    max_upload_mb: float = Field(
        25.0,
        alias="MAX_UPLOAD_MB",
        gt=0,
        description="The API's upload limit (same variable), so the browser refuses bigger files.",
    )
    ingest_wait_s: float = Field(
        120.0,
        alias="UI_INGEST_WAIT_S",
        ge=0,
        description="How long the Documents page waits for new uploads to finish ingesting.",
    )

    @property
    def api_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        url = self.api_url_override or f"http://{self.api_host}:{self.api_port}"
        return url.rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> UiSettings:
    """The process's UI settings, read from the environment and ``.env`` once."""
    return UiSettings()
