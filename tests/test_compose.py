"""The compose file: valid against the Compose Specification, and consistent with the
settings the embedded stack uses (Docker itself cannot run here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.settings import BackendSettings
from backend.vllm_launch import vllm_args, vllm_env

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    import jsonschema

    if not SCHEMA.parent.is_dir():  # a checkout without the shared folder beside it
        pytest.skip(f"no shared schemas folder at {SCHEMA.parent}")
    # The folder is there, so the schema must be: a rename must not silently skip this.
    assert SCHEMA.is_file(), f"{SCHEMA} is missing from {SCHEMA.parent}"
    jsonschema.validate(compose, json.loads(SCHEMA.read_text()))


def test_full_stack_services_and_health_ordering(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"vllm", "qdrant", "postgres", "api", "ui", "trainer"} <= services.keys()
    assert services["trainer"]["profiles"] == ["trainer"]
    # The trainer profile runs the online loop, restarted if it dies (its state is in PG).
    assert services["trainer"]["command"][0] == "online"
    assert services["trainer"]["restart"] == "unless-stopped"
    for stateful in ("vllm", "qdrant", "postgres", "api"):
        assert "healthcheck" in services[stateful], stateful
    for name in ("api", "ui", "trainer"):
        for dep, cond in services[name]["depends_on"].items():
            assert cond == {"condition": "service_healthy"}, (name, dep)


def _resolve(value: str) -> str:
    """``${VAR:-default}`` → default, as compose does with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def test_vllm_flags_match_the_launch_settings(
    compose: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    vllm = compose["services"]["vllm"]
    command = [_resolve(a) for a in vllm["command"]]
    expected = vllm_args(BackendSettings(MODEL_SERVER_PORT=8000, MAX_NUM_SEQS=64))
    assert command == expected
    assert {
        k: _resolve(v) for k, v in vllm["environment"].items() if k in vllm_env(BackendSettings())
    } == vllm_env(BackendSettings())


def test_adapters_volume_is_shared_at_the_same_path(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounts = {
        name: [v for v in services[name]["volumes"] if v.startswith("adapters:")]
        for name in ("vllm", "trainer", "api")
    }
    assert mounts["vllm"] == mounts["trainer"] == mounts["api"] == ["adapters:/adapters"]
    assert services["api"]["environment"]["ADAPTERS_DIR"] == "/adapters"


def test_the_model_server_key_is_required_and_shared(compose: dict[str, Any]) -> None:
    # vLLM takes VLLM_API_KEY as its --api-key; the API and the trainer send the same one,
    # and compose refuses to start without it rather than serve /v1 to anyone.
    services = compose["services"]
    for name in ("vllm", "api", "trainer"):
        value = services[name]["environment"]["VLLM_API_KEY"]
        assert value.startswith("${VLLM_API_KEY:?"), name
