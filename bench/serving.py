"""Embedded model server vs raw ``model.generate``: throughput and LoRA hot-swap latency.

For each model (the tiny demo model, the real SmolLM2-135M-Instruct converted from its
wheel, and random-weight models built from configs big enough that compute dominates
HTTP), this measures, in one run on the same machine:

* tokens/s of raw ``model.generate`` in-process (greedy, KV cache, batch 1 / 4 / 8);
* tokens/s of the embedded server over HTTP with 1, 4 and 8 concurrent streams;
* hot-swap latency: ``POST /v1/load_lora_adapter`` of a rank-16 adapter → first streamed
  token produced with it (p50 / p95 over several adapters, each under a new name).

Targets (2-core CPU): single-stream server >= 0.85x raw generate on the bigger model;
hot-swap p95 <= 0.5 s. Usage::

    .venv/bin/python bench/serving.py [--models tiny,smollm2,small] [--device cpu|cuda]
        [--threads N]

Both sides use the same torch thread count (``--threads``, default the server's own
default: 1 on machines with <= 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MESSAGES = [{"role": "user", "content": "Explain retrieval augmented generation in a few words."}]

# Model shapes built from configs with random weights (no download).
SHAPES: dict[str, dict[str, Any]] = {
    "small": {  # the "hidden 512, 8 layers"
        "hidden_size": 512,
        "intermediate_size": 1536,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
    },
    "qwen2.5-0.5b": {  # Qwen2.5-0.5B-Instruct's shape, for GPU runs
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
}


def build_model(name: str, workdir: Path) -> Path:
    """Directory of model ``name``: the tiny model, or a random one with the tiny tokenizer."""
    from backend.tiny import ensure

    if name == "smollm2":
        from backend.settings import get_settings
        from backend.smollm2 import ensure_smollm2

        return ensure_smollm2(get_settings().models_dir)  # converted once, reused
    tiny = ensure(workdir / "models", "chat")
    if name == "tiny":
        return tiny
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = workdir / "models" / name
    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = Qwen2Config(
        **SHAPES[name],
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_adapters(model_dir: Path, root: Path, count: int, rank: int = 16) -> list[Path]:
    """``count`` distinct rank-``rank`` LoRA adapters for the model, under ``root``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets)
    )
    paths = []
    for i in range(count):
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
        path = root / f"swap-{i}"
        peft_model.save_pretrained(path)
        paths.append(path)
    return paths


class RawGenerate:
    """The peer: ``model.generate`` in this process (greedy, KV cache), same model files."""

    def __init__(self, model_dir: Path, device: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from backend.models import resolve_dtype

        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype = resolve_dtype("auto", device)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        self.model = model.to(device).eval()  # type: ignore[arg-type]
        text = self.tokenizer.apply_chat_template(
            MESSAGES, add_generation_prompt=True, tokenize=False
        )
        self.ids = self.tokenizer.encode(text, add_special_tokens=False)

    def seconds(self, batch: int, tokens: int) -> float:
        """Wall time of generating ``tokens`` for ``batch`` copies of the prompt."""
        import torch

        input_ids = torch.tensor([self.ids] * batch, device=self.device)
        with torch.inference_mode():
            if self.device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            out = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            if self.device == "cuda":
                torch.cuda.synchronize()
        assert out.shape[1] - input_ids.shape[1] == tokens
        return time.perf_counter() - started


def start_server(
    model_dir: Path, adapters: Path, workdir: Path, device: str, threads: int
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``python -m backend.server`` on a free port; return the process and its root URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DATA_DIR": str(workdir), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "backend.server", "--model", str(model_dir),
        "--served-model-name", "bench", "--port", str(port), "--adapters-root", str(adapters),
        "--device", device, "--max-loras", "4", "--log-level", "warning",
        "--threads", str(threads),
    ]  # fmt: skip
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / "server.log").read_text())
        try:
            if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                return process, root
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("server did not start")


async def _stream(client: httpx.AsyncClient, model: str, tokens: int) -> tuple[int, float, float]:
    """Stream one completion; return (tokens, seconds to first token, total seconds)."""
    body = {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "return_token_ids": True,
    }
    started = time.perf_counter()
    first = None
    count = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:])["choices"]:
                n = len(choice.get("token_ids") or [])
                if n and first is None:
                    first = time.perf_counter() - started
                count += n
    return count, first or 0.0, time.perf_counter() - started


async def _forward_passes(client: httpx.AsyncClient) -> int:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("flywheel_forward_passes_total "):
            return int(float(line.split()[1]))
    raise RuntimeError("no flywheel_forward_passes_total in /metrics")


async def throughput(
    root: str, raw: RawGenerate, tokens: int, concurrency: list[int], repeats: int
) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Tokens/s of raw generate (batch c) and of the server (c concurrent streams).

    The two are measured alternately, ``repeats`` times each, best run kept, so that load
    from other processes on a shared machine hits both sides alike.
    """
    raw_tps, server_tps, passes = {}, {}, {}
    async with httpx.AsyncClient(base_url=root, timeout=600) as client:
        for c in concurrency:  # warm-up, every batch shape once
            raw.seconds(c, 4)
            await asyncio.gather(*(_stream(client, "bench", 4) for _ in range(c)))
        for c in concurrency:
            raw_runs, server_runs = [], []
            before = await _forward_passes(client)
            for _ in range(repeats):
                raw_runs.append(raw.seconds(c, tokens))
                started = time.perf_counter()
                outs = await asyncio.gather(*(_stream(client, "bench", tokens) for _ in range(c)))
                server_runs.append(time.perf_counter() - started)
                assert all(o[0] == tokens for o in outs), outs
            raw_tps[c] = c * tokens / min(raw_runs)
            server_tps[c] = c * tokens / min(server_runs)
            passes[c] = (await _forward_passes(client) - before) / (repeats * tokens)
    return raw_tps, server_tps, passes


async def hot_swap(root: str, adapters: list[Path]) -> list[tuple[float, float]]:
    """(load call → first token with the new adapter, load call alone), in seconds."""
    latencies = []
    async with httpx.AsyncClient(base_url=root, timeout=600) as client:
        for i, path in enumerate(adapters):
            name = f"swap-{i}-v1"
            started = time.perf_counter()
            response = await client.post(
                "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}
            )
            response.raise_for_status()
            loaded = time.perf_counter() - started
            _, first, _ = await _stream(client, name, 1)
            latencies.append((loaded + first, loaded))
            await client.post("/v1/unload_lora_adapter", json={"lora_name": name})
    return latencies


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_model(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from tqdm import tqdm

    steps = tqdm(total=5, desc=f"{name}", leave=False)
    model_dir = build_model(name, workdir)
    adapters_root = workdir / f"adapters-{name}"
    adapters = build_adapters(model_dir, adapters_root, args.swaps)
    steps.update()
    raw_peer = RawGenerate(model_dir, args.device)
    steps.update()
    process, root = start_server(model_dir, adapters_root, workdir, args.device, args.threads)
    try:
        steps.update()
        raw, served, passes = asyncio.run(
            throughput(root, raw_peer, args.tokens, args.concurrency, args.repeats)
        )
        steps.update()
        swaps = asyncio.run(hot_swap(root, adapters))
        steps.update()
    finally:
        process.terminate()
        process.wait(timeout=30)
        steps.close()
    return {"raw": raw, "server": served, "passes": passes, "swaps": swaps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default="tiny,smollm2,small", help=f"tiny, smollm2 and/or {list(SHAPES)}"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads, both sides")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per stream")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--swaps", type=int, default=12, help="hot-swap trials (adapters)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (best kept)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    import torch

    from backend.settings import get_settings

    args.threads = args.threads or get_settings().server_threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)  # the raw peer gets what the server gets

    print(
        f"device={args.device} torch threads={torch.get_num_threads()} "
        f"tokens/stream={args.tokens} load average={os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        for name in args.models.split(","):
            res = run_model(name, args, Path(tmp))
            print(f"\n== {name}")
            print(
                f"{'streams':>8} {'raw generate tok/s':>20} {'server tok/s':>14} {'ratio':>7}"
                f" {'passes/step':>12}"
            )
            for c in args.concurrency:
                raw, srv = res["raw"][c], res["server"][c]
                print(
                    f"{c:>8} {raw:>20.1f} {srv:>14.1f} {srv / raw:>6.2f}x {res['passes'][c]:>12.2f}"
                )
            swaps = [t for t, _ in res["swaps"]]
            calls = [t for _, t in res["swaps"]]
            print(
                f"hot-swap (load rank-16 adapter -> first token), {len(swaps)} trials: "
                f"p50 {percentile(swaps, 0.5) * 1000:.0f} ms, "
                f"p95 {percentile(swaps, 0.95) * 1000:.0f} ms, max {max(swaps) * 1000:.0f} ms "
                f"(the load call alone: p50 {percentile(calls, 0.5) * 1000:.0f} ms)"
            )
            if name != "tiny":
                ratio = res["server"][1] / res["raw"][1]
                print(
                    f"targets: single-stream {ratio:.2f}x (>= 0.85x: "
                    f"{'met' if ratio >= 0.85 else 'NOT met'}); hot-swap p95 "
                    f"{'met' if percentile(swaps, 0.95) <= 0.5 else 'NOT met'} (<= 0.5 s)"
                )


if __name__ == "__main__":
    main()
