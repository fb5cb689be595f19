"""``.env.example`` documents every setting of every package, each with a comment."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from app.settings import AppSettings
from backend.settings import BackendSettings
from memory.settings import MemorySettings
from retriever.settings import RetrieverSettings
from rl_trainer.settings import TrainerSettings
from ui.settings import UiSettings

ROOT = Path(__file__).resolve().parents[1]
ALL: list[type[BaseSettings]] = [
    AppSettings,
    BackendSettings,
    MemorySettings,
    RetrieverSettings,
    TrainerSettings,
    UiSettings,
]


def test_every_setting_is_listed_with_a_comment() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    listed = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"([A-Z_]+)=", line))}
    names = {f.alias for cls in ALL for f in cls.model_fields.values() if f.alias}
    assert sorted(names - listed.keys()) == []
    assert sorted(listed.keys() - names) == []  # nothing stale either
    for name, i in listed.items():  # a comment sits somewhere above each block
        assert any(lines[j].startswith("#") for j in range(max(0, i - 12), i)), name


def test_the_example_values_are_valid_settings(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # no .env here: the example's values alone
    for line in (ROOT / ".env.example").read_text().splitlines():
        if m := re.match(r"([A-Z_]+)=(.*)", line):
            monkeypatch.setenv(m.group(1), m.group(2))
    for cls in ALL:
        cls()  # raises on any value the settings refuse
    # Empty means the default, not an empty path or name.
    backend = BackendSettings()
    assert backend.adapters_root == Path("data") / "adapters"
    assert backend.model_name == backend.llm_model
