"""The embedded model server: ``python -m backend.server`` (what ``make run`` starts).

It speaks vLLM's OpenAI-compatible API, runtime LoRA loading included, over transformers
and peft, so a laptop without a GPU runs the same code paths as the full stack. Flags
default to the settings (``LLM_MODEL``, ``MODEL_SERVER_HOST``/``PORT``, ``ADAPTERS_DIR``,
``DEVICE``, ``DTYPE``, ``MAX_LORAS``, ``MAX_LORA_RANK``, ``MAX_NUM_SEQS``,
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``).

Adapter residency: at most ``MAX_LORAS`` adapters' weights stay in the model; when another
one is needed the least recently used idle one is dropped from memory (it stays listed
and is reloaded from its path on its next request), like vLLM's LRU adapter cache.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from backend.settings import VLLM_LORA_RANKS, get_settings

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command line, with defaults from the settings."""
    s = get_settings()
    p = argparse.ArgumentParser(prog="python -m backend.server", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", default=None, help=f"hub id, local path, 'smollm2' or 'tiny' [{s.llm_model}]"
    )
    p.add_argument("--served-model-name", default=s.served_model_name, help="name clients use")
    p.add_argument("--host", default=s.model_server_host)
    p.add_argument("--port", type=int, default=s.model_server_port)
    p.add_argument(
        "--adapters-root",
        type=Path,
        default=s.adapters_root,
        help="the only directory LoRA adapters may be loaded from",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=s.device)
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=s.dtype)
    p.add_argument("--max-loras", type=int, default=s.max_loras)
    p.add_argument("--max-lora-rank", type=int, choices=VLLM_LORA_RANKS, default=s.max_lora_rank)
    p.add_argument("--max-num-seqs", type=int, default=s.max_num_seqs)
    p.add_argument(
        "--threads",
        type=int,
        default=s.server_threads,
        help="torch CPU threads (MODEL_SERVER_THREADS; default 1 on <= 2 cores)",
    )
    p.add_argument(
        "--runtime-lora",
        action=argparse.BooleanOptionalAction,
        default=s.allow_runtime_lora_updating,
        help="expose /v1/load_lora_adapter and /v1/unload_lora_adapter",
    )
    p.add_argument(
        "--api-key",
        default=s.vllm_api_key,
        help="require 'Authorization: Bearer KEY' on /v1 routes, as vLLM does (VLLM_API_KEY)",
    )
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse flags, load the model, serve until interrupted."""
    import uvicorn

    from backend.engine import Engine
    from backend.models import ModelLoadError, load_served_model
    from backend.server_app import create_app

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = get_settings().model_copy(update={"device": args.device, "dtype": args.dtype})
    if args.threads:
        import torch

        # Decoding is many small ops: on a small shared machine one thread keeps its
        # speed when another process is busy, where two threads fight and collapse.
        torch.set_num_threads(args.threads)
    explicit = args.model is not None or "llm_model" in settings.model_fields_set
    model = args.model or settings.llm_model
    try:
        loaded = load_served_model(
            model, settings, explicit=explicit, served_name=args.served_model_name
        )
    except ModelLoadError as exc:
        sys.exit(
            f"error: {exc}\nGive --model a local model directory, a reachable hub id, or 'tiny'."
        )
    engine = Engine(loaded, max_loras=args.max_loras, max_num_seqs=args.max_num_seqs)
    adapters_root = args.adapters_root.expanduser()
    adapters_root.mkdir(parents=True, exist_ok=True)
    app = create_app(
        engine,
        adapters_root=adapters_root,
        max_lora_rank=args.max_lora_rank,
        runtime_lora=args.runtime_lora,
        api_key=args.api_key,
    )
    if not args.api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s without an API key: set VLLM_API_KEY", args.host)
    logger.info(
        "serving '%s' on http://%s:%d/v1 (adapters from %s, runtime LoRA %s)",
        loaded.served_name,
        args.host,
        args.port,
        adapters_root,
        "on" if args.runtime_lora else "off",
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
