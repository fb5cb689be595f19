"""Fixtures for the model-server tests: a real server process and LoRA adapters for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    """A running embedded model server."""

    base_url: str  # …/v1
    root_url: str
    adapters_root: Path
    model_path: Path
    process: subprocess.Popen[bytes]
    log: Path


def make_adapter(
    model_path: Path,
    out: Path,
    *,
    seed: int,
    rank: int = 8,
    scale: float = 0.3,
    base_name: str | None = None,
) -> Path:
    """Save a LoRA adapter for the tiny model whose B weights are random, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(out)
    if base_name is not None:
        cfg_file = out / "adapter_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg["base_model_name_or_path"] = base_name
        cfg_file.write_text(json.dumps(cfg))
    return out


def start_server(
    model_path: Path, adapters_root: Path, data_dir: Path, *extra: str, timeout: float = 120.0
) -> Server:
    """Start ``python -m backend.server`` on a free loopback port and wait for /health."""
    port = free_port()
    log = data_dir / f"server-{port}.log"
    env = {**os.environ, "DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "backend.server", "--model", str(model_path),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
        "--adapters-root", str(adapters_root), "--log-level", "warning", *extra,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"

    def alive() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")

    try:
        wait_until(
            lambda: httpx.get(f"{root}/health", timeout=1).status_code == 200,
            timeout,
            interval=0.3,
            what=f"{root}/health",
            alive=alive,
        )
    except AssertionError as exc:
        process.kill()
        raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()}") from exc
    return Server(f"{root}/v1", root, adapters_root, model_path, process, log)


def stop_server(server: Server) -> None:
    """Terminate the server process started by :func:`start_server`."""
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def server(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded server per test module, serving the tiny model as ``tiny``."""
    data_dir = tmp_path_factory.mktemp("server-data")
    adapters_root = tmp_path_factory.mktemp("adapters")
    srv = start_server(tiny_chat_model, adapters_root, data_dir)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def adapter_factory(server: Server) -> Callable[..., Path]:
    """Build adapters for the served tiny model under the server's adapters root."""

    def build(name: str, *, seed: int, rank: int = 8, **kw: object) -> Path:
        out = server.adapters_root / name
        if not out.exists():
            make_adapter(server.model_path, out, seed=seed, rank=rank, **kw)  # type: ignore[arg-type]
        return out

    return build
