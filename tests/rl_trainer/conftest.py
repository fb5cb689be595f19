"""A real stack for the trainer tests: the embedded model server with the tiny model,
the API over SQLite, and the ``rl-trainer`` CLI run as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.app.conftest import ROOT, Api, ModelServer, start_api, stop


@dataclass
class Stack:
    """Model server + API + the environment the trainer CLI runs with."""

    server: ModelServer
    api: Api
    model: Path
    env: dict[str, str]

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``rl-trainer ARGS`` in its own process, as a person would."""
        done = subprocess.run(
            [sys.executable, "-m", "rl_trainer.cli", *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"rl-trainer {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr[-6000:]}"
            )
        return done


def trainer_env(data_dir: Path, server: ModelServer, model: Path) -> dict[str, str]:
    """What the trainer needs to find the store, the server and the base model."""
    return {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "MODEL_SERVER_URL": server.url,
        "VLLM_API_KEY": server.key,
        "ADAPTERS_DIR": str(server.adapters),
        "LLM_MODEL": str(model),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }


def start_loop_api(data_dir: Path, server: ModelServer, **extra: str) -> Api:
    """The API as the loop tests need it: greedy, short answers from the best source."""
    return start_api(
        data_dir,
        server.url,
        AGENT_TEMPERATURE="0",  # greedy: a behaviour change is visible, not sampling noise
        AGENT_MAX_TOKENS="12",
        AGENT_TOP_K="1",
        # The loop is under test, not declining: every question is answered by the model,
        # as the held-out ones ("Is 2024 special?") are too broad for the evidence check.
        AGENT_MIN_EVIDENCE="0",
        MEMORY_ENABLED="false",
        **extra,
    )


@pytest.fixture(scope="session")
def stack(
    model_server: ModelServer, tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("loop-data")
    api = start_loop_api(data_dir, model_server)
    yield Stack(
        model_server, api, tiny_chat_model, trainer_env(data_dir, model_server, tiny_chat_model)
    )
    stop(api.proc)


@pytest.fixture(scope="session")
def fresh_adapter(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained LoRA adapter of the tiny model (peft files only)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("fresh-adapter")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_chat_model))
    peft = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    peft.save_pretrained(str(out))
    return out
