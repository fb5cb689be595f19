"""API settings: defaults, environment overrides, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import AppSettings


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = AppSettings()
    assert s.api_url == "http://127.0.0.1:8000"
    assert s.ui_url == "http://127.0.0.1:8501"
    assert s.db_url == "sqlite:///data/flywheel.db"


def test_environment_overrides(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("DATA_DIR", str(tmp_path))
    clean_env.setenv("API_PORT", "9000")
    clean_env.setenv("UI_PORT", "9001")
    s = AppSettings()
    assert s.api_url == "http://127.0.0.1:9000"
    assert s.ui_url == "http://127.0.0.1:9001"
    assert s.db_url == f"sqlite:///{tmp_path / 'flywheel.db'}"
    clean_env.setenv("DATABASE_URL", "postgresql+psycopg://u:p@db/flywheel")
    assert AppSettings().db_url == "postgresql+psycopg://u:p@db/flywheel"


def test_invalid_port_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("API_PORT", "0")
    with pytest.raises(ValidationError, match="API_PORT"):
        AppSettings()
