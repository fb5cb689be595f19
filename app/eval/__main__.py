"""``python -m app.eval --dataset DIR [--json [PATH]]``: answer quality of the agent.

The run has a store of its own (a fresh data folder unless ``--data-dir`` names one), so
it never touches a user's documents or training data; memory is off, so every question
is answered on its own. The model server is the configured one (``MODEL_SERVER_URL``, or
the embedded server's host and port); ``--start-server`` starts the embedded one for the
run with the configured ``LLM_MODEL`` (``smollm2`` for the real offline model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.eval.dataset import POOLS, DatasetError, load_dataset
from app.eval.scoring import TARGETS, figures, meets

logger = logging.getLogger("app.eval")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.eval", description=__doc__)
    parser.add_argument("--dataset", type=Path, required=True, help="folder of the set")
    parser.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="PATH",
        help="write figures and per-question outcomes as JSON (to stdout without PATH)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="at most N of each kind")
    parser.add_argument(
        "--pool", choices=POOLS, default="all",
        help="only the questions of this pool: 'eval' is a fixed third of the ids (by hash), "
        "'train' the rest; the documents are always all of the set's",
    )  # fmt: skip
    parser.add_argument(
        "--adapter", default=None, metavar="NAME|none",
        help="answer with this served adapter, or 'none' for the base model "
        "(default: whatever is active in the eval's own store, i.e. the base model)",
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=None, help="the run's own store")
    parser.add_argument("--start-server", action="store_true", help="start the embedded server")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path) -> subprocess.Popen[bytes]:
    """The embedded model server on a free loopback port, ready to answer."""
    import httpx

    port = _free_port()
    # The run's settings objects are built after this, so the port reaches them (and the
    # child) through the environment, like any other setting.
    os.environ.update(MODEL_SERVER_PORT=str(port), MODEL_SERVER_HOST="127.0.0.1")
    os.environ.pop("MODEL_SERVER_URL", None)
    log = (data_dir / "model-server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.server"], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the model server exited; see {data_dir / 'model-server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit("the model server did not start within 10 minutes")


async def evaluate(services: Any, dataset: Any, adapter: str | None) -> dict[str, Any]:
    """Ingest the set's documents, ask its questions through the agent, and report."""
    from app.eval.runner import ask_all, eval_user, ingest

    if adapter is not None:
        services.pinned_model = "" if adapter == "none" else adapter
    user_id = await asyncio.to_thread(eval_user, services)
    chunks = await asyncio.to_thread(ingest, services, dataset, user_id)
    logger.info("%d documents ingested as %d chunks", len(dataset.documents), chunks)
    with tqdm(total=len(dataset.items), desc="questions", unit="q") as bar:
        outcomes = await ask_all(services, dataset, user_id, on_done=lambda _: bar.update())
    model = (
        services.pinned_model
        or services.context(user_id=user_id, thread_id="", turn_id="", collection=None).model
    )
    return {
        "dataset": dataset.name,
        "model": model,
        "figures": figures(outcomes),
        "outcomes": [o.row() for o in outcomes],
    }


async def _run(args: argparse.Namespace, dataset: Any) -> dict[str, Any]:
    from app.services import open_services
    from app.settings import AppSettings

    async with open_services(AppSettings()) as services:
        return await evaluate(services, dataset, args.adapter)


def prepare(data_dir: Path) -> None:
    """The eval's own store and no memory: set before any settings object is read.

    Built models stay in the project's caches, so SmolLM2 is not converted again per run.
    """
    from backend.settings import BackendSettings
    from retriever.settings import RetrieverSettings

    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MODELS_DIR", str(BackendSettings().models_dir.resolve()))
    # Likewise the embedder's one-off ONNX export (tens of seconds) is the user's own.
    os.environ.setdefault("EMBEDDING_CACHE_DIR", str(RetrieverSettings().models_dir.resolve()))
    os.environ.update(DATA_DIR=str(data_dir), MEMORY_ENABLED="false", RATE_LIMITS="false")


def table(report: dict[str, Any]) -> str:
    """The figures as a Markdown table, each with its target when it has one."""
    lines = [f"{report['dataset']} on {report['model']}", "", "| figure | value | target |"]
    lines.append("|---|---|---|")
    for name, value in report["figures"].items():
        target = TARGETS.get(name)
        verdict = meets(name, value)
        mark = "" if verdict is None else (" (met)" if verdict else " (missed)")
        goal = f"{target[0]} {target[1]:g}{mark}" if target else ""
        lines.append(f"| {name} | {value} | {goal} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the evaluation and print its table (and JSON when asked)."""
    args = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        dataset = load_dataset(args.dataset).pool(args.pool).sample(args.limit)
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}") from None
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="flywheel-eval-"))
    prepare(data_dir)
    server = start_server(data_dir) if args.start_server else None
    try:
        report = asyncio.run(_run(args, dataset))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    sys.stdout.write(table(report) + "\n")
    if args.json == "-":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        logger.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
