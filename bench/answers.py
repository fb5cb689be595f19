"""Answer quality on SmolLM2: Flywheel's agent against a plain RAG prompt, in one run.

Both systems use the same embedded model server (SmolLM2-135M-Instruct unless
``LLM_MODEL`` says otherwise), the same ingested documents and the same retriever. The
agent answers through ``python -m app.eval``'s path (the API's agent: fenced sources,
evidence-based declines, attached citations, its sampling). The peer is what a user gets
from the model with a textbook RAG prompt: the top passages in the system message, the
question, the server's default sampling, nothing done to the answer. Each is scored the
same way (``app.eval.scoring``); the table gives both and the difference.

Run: ``.venv/bin/python bench/answers.py [--dataset ../shared/data/clapnq] [--limit 10]``
(``--limit N`` takes N answerable and N unanswerable questions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.eval.__main__ import evaluate, prepare, start_server  # noqa: E402
from app.eval.dataset import EvalSet, load_dataset  # noqa: E402
from app.eval.runner import COLLECTION, eval_user, score  # noqa: E402
from app.eval.scoring import TARGETS, Outcome, figures  # noqa: E402
from backend.errors import ModelServerError  # noqa: E402

PEER_SYSTEM = "Answer the question using the context below.\n\nContext:\n{context}"


async def ask_plain(services: Any, dataset: EvalSet, max_tokens: int) -> list[Outcome]:
    """The peer: top passages in a plain prompt, the model's answer as it comes."""
    user_id = await asyncio.to_thread(eval_user, services)
    k = services.settings.top_k
    outcomes = []
    for item in tqdm(dataset.items, desc="plain prompt", unit="q"):
        start = time.perf_counter()
        hits = await asyncio.to_thread(
            services.retriever.search, item.question, owner=user_id, collection=COLLECTION, k=k
        )
        context = "\n\n".join(f"[{n}] {h.text}" for n, h in enumerate(hits, start=1))
        messages = [
            {"role": "system", "content": PEER_SYSTEM.format(context=context)},
            {"role": "user", "content": item.question},
        ]
        error = None
        try:
            answer = await services.llm.complete(
                messages, model=services.base_model, max_tokens=max_tokens
            )
        except ModelServerError as exc:  # counted, as the agent's failures are
            answer, error = "", str(exc)
        retrieved = [{"document_id": h.document_id} for h in hits]
        outcomes.append(
            score(
                item,
                answer=answer,
                retrieved=retrieved,
                sources=[],
                at_cap=False,
                latency_s=time.perf_counter() - start,
                error=error,
            )
        )
    return outcomes


async def run(dataset: EvalSet, save: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both systems' figures, the agent's first (it ingests the documents)."""
    from app.services import open_services
    from app.settings import AppSettings

    settings = AppSettings()
    async with open_services(settings) as services:
        agent = await evaluate(services, dataset, "none")
        if save is not None:  # a long run keeps what it has measured
            save.write_text(json.dumps({"agent": agent}, indent=2))
        peer = await ask_plain(services, dataset, settings.max_tokens)
    report = {"agent": agent, "peer": {"figures": figures(peer), "outcomes": peer}}
    if save is not None:
        save.write_text(json.dumps(report, indent=2, default=lambda o: o.row()))
    return agent["figures"], figures(peer)


def table(agent: dict[str, Any], peer: dict[str, Any]) -> str:
    """Both systems' figures side by side, with the difference and the target."""
    lines = ["| figure | Flywheel agent | plain RAG prompt | difference | target |"]
    lines.append("|---|---|---|---|---|")
    for name, value in agent.items():
        other = peer.get(name)
        diff = (
            f"{value - other:+.3f}" if isinstance(value, float) and isinstance(other, float) else ""
        )
        target = TARGETS.get(name)
        goal = f"{target[0]} {target[1]:g}" if target else ""
        lines.append(f"| {name} | {value} | {other} | {diff} | {goal} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/clapnq")
    parser.add_argument("--limit", type=int, default=10, help="N answerable + N unanswerable")
    parser.add_argument("--json", type=Path, default=None, help="write both reports here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("LLM_MODEL", "smollm2")
    os.environ.setdefault("MODEL_SERVER_THREADS", "1")
    dataset = load_dataset(args.dataset).sample(args.limit)
    work = Path(tempfile.mkdtemp(prefix="bench-answers-"))
    prepare(work)
    server = start_server(work)
    try:
        agent, peer = asyncio.run(run(dataset, args.json))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{dataset.name}: {len(dataset.items)} questions, model {os.environ['LLM_MODEL']}")
    print(table(agent, peer))


if __name__ == "__main__":
    main()
