"""A bounded schemathesis run against the embedded model server (see ``tests.fuzz``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.backend.conftest import Server
from tests.fuzz import fuzz

pytestmark = pytest.mark.slow


def _short_generations(case: Any) -> None:
    # Without a cap, chat defaults to the model's whole context (as vLLM does): seconds a
    # case. Only valid integer caps are shortened, so bad values still reach validation.
    if isinstance(case.body, dict):
        for key in ("max_tokens", "max_completion_tokens"):
            value = case.body.get(key)
            if value is None or (type(value) is int and value > 8):
                case.body[key] = 8


def test_model_server_conforms_to_its_schema_under_fuzzing(server: Server) -> None:
    ran = fuzz(server.root_url, max_examples=100, prepare=_short_generations)
    assert "POST /v1/chat/completions" in ran and "POST /v1/load_lora_adapter" in ran
    assert sum(ran.values()) >= 300, ran
