"""vLLM launch arguments and environment, derived from the settings in one place.

The compose file, the README and any script that starts vLLM take these values from here
(``python -m backend.vllm_launch``), so the served model name, the LoRA limits and the
runtime-updating switch cannot drift from what the embedded server and the client use.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from backend.settings import BackendSettings, get_settings


def vllm_args(settings: BackendSettings) -> list[str]:
    """Arguments after ``vllm serve`` for the configured model and LoRA limits."""
    return [
        settings.llm_model,
        "--served-model-name",
        settings.model_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(settings.model_server_port),
        "--enable-lora",
        "--max-lora-rank",
        str(settings.max_lora_rank),
        "--max-loras",
        str(settings.max_loras),
        "--max-cpu-loras",
        str(settings.max_cpu_loras),
        "--max-num-seqs",
        str(settings.max_num_seqs),
    ]


def vllm_env(settings: BackendSettings) -> dict[str, str]:
    """Environment variables vLLM needs (runtime LoRA loading on or off, the API key)."""
    env = {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"
        if settings.allow_runtime_lora_updating
        else "False"
    }
    if settings.vllm_api_key:
        env["VLLM_API_KEY"] = settings.vllm_api_key
    return env


def main(argv: list[str] | None = None) -> None:
    """CLI: print the vLLM command line, or the values as JSON for tooling."""
    parser = argparse.ArgumentParser(prog="python -m backend.vllm_launch", description=__doc__)
    parser.add_argument(
        "--format",
        choices=["shell", "json", "args"],
        default="shell",
        help="shell: an env + vllm serve line; json: {args, env}; args: one argument per line",
    )
    fmt = parser.parse_args(argv).format
    settings = get_settings()
    args, env = vllm_args(settings), vllm_env(settings)
    if fmt == "json":
        out = json.dumps({"args": args, "env": env}, indent=2)
    elif fmt == "args":
        out = "\n".join(args)
    else:
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        out = f"{prefix} vllm serve {shlex.join(args)}"
    sys.stdout.write(out + "\n")


if __name__ == "__main__":
    main()
