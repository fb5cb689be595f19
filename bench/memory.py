"""Benchmark of long-term memory: recall and remember latency, against raw Qdrant peers.

Setup: Qdrant local mode in a temporary directory, the local all-MiniLM-L6-v2 embedder,
``USERS`` users with ``PER_USER`` memories each (default 10 x 1,000). Measured:

- ``recall`` (mem0 search scoped to one user) against the same query done by hand:
  embed with the same model, then ``query_points`` with the same user filter.
- ``remember(infer=False)`` against embedding one text and upserting one point by hand.
- ``remember(infer=True)`` with a loopback OpenAI-compatible responder that answers at
  once with one fact, against the bare chat request to that responder.

Targets on a 2-core CPU: recall p95 <= 20 ms, remember(infer=False) p95 <= 100 ms.
Run: ``.venv/bin/python bench/memory.py [--per-user 1000] [--users 10] [--torch-threads 1]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tqdm import tqdm

# This script is named like the package it measures: keep its own folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUBJECTS = [
    "favourite food", "home city", "programming language", "pet", "hobby", "employer",
    "favourite band", "sport", "allergy", "car", "favourite book", "travel plan",
    "diet", "project", "operating system", "editor", "coffee order", "weekend plan",
]  # fmt: skip
VALUES = [
    "Thai curry", "Lisbon", "Rust", "a grey cat", "rock climbing", "a bakery", "Radiohead",
    "tennis", "peanuts", "an old Volvo", "Dune", "Japan in April", "vegetarian",
    "a compiler", "Debian", "Neovim", "flat white", "hiking", "Kyoto", "Go", "sourdough",
    "cycling", "shellfish", "jazz", "chess", "Berlin", "Python", "a parrot", "marathons",
]  # fmt: skip
QUERIES = [
    "what should I cook for dinner", "which language is my project in", "where do I live",
    "what pets do I have", "any food allergies", "what do I do at the weekend",
    "music recommendations", "which editor do I use", "plan a trip for me", "coffee",
]  # fmt: skip


def fact(rng: random.Random, i: int) -> str:
    return f"My {rng.choice(SUBJECTS)} is {rng.choice(VALUES)} (note {i})"


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def timed(fn: Callable[[int], Any], n: int, label: str) -> list[float]:
    fn(-1)  # warm-up call, not counted
    samples = []
    for i in tqdm(range(n), desc=label, leave=False):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


class Responder(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers at once with one extracted fact."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps({"memory": [{"text": f"Likes {uuid.uuid4().hex[:8]} tea"}]})
        payload = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "bench"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def seed(memory: Any, users: list[str], per_user: int, rng: random.Random) -> None:
    """Write memories with the payload mem0's infer=False path writes, in batches.

    Each distinct fact ("My pet is a grey cat") is embedded once; its numbered copies get
    that vector plus a little noise. Search latency does not depend on what the vectors
    hold (every candidate is scored), and this keeps seeding 10,000 memories short on a
    busy 2-core machine.
    """
    import numpy as np
    from mem0.utils.lemmatization import lemmatize_for_bm25

    distinct = [f"My {subject} is {value}" for subject in SUBJECTS for value in VALUES]
    base = np.asarray(memory.embedding_model.embed_batch(distinct, "add"), dtype=np.float32)
    noise = np.random.default_rng(0)
    batch = 500
    with tqdm(total=len(users) * per_user, desc="seeding memories") as bar:
        for user in users:
            for start in range(0, per_user, batch):
                picks = [rng.randrange(len(distinct)) for _ in range(min(batch, per_user - start))]
                texts = [f"{distinct[p]} (note {start + i})" for i, p in enumerate(picks)]
                vectors = base[picks] + noise.normal(0, 0.01, (len(picks), base.shape[1]))
                now = datetime.now(UTC).isoformat()
                payloads = [
                    {
                        "user_id": user,
                        "role": "user",
                        "data": text,
                        "hash": hashlib.md5(text.encode()).hexdigest(),
                        "created_at": now,
                        "updated_at": now,
                        "text_lemmatized": lemmatize_for_bm25(text),
                    }
                    for text in texts
                ]
                ids = [str(uuid.uuid4()) for _ in texts]
                memory.vector_store.insert(vectors=vectors.tolist(), ids=ids, payloads=payloads)
                bar.update(len(texts))


def report(name: str, ours: list[float], peer_name: str, peer: list[float], target: str) -> None:
    p50, p95 = percentiles(ours)
    q50, q95 = percentiles(peer)
    print(
        f"{name:<26} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms   |  {peer_name:<34} "
        f"p50 {q50:6.1f} ms  p95 {q95:6.1f} ms   |  ratio p50 {p50 / q50:5.2f}x "
        f"p95 {p95 / q95:5.2f}x   target {target}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--per-user", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); 1 helps a lot on a busy small CPU",
    )
    return parser.parse_args()


def measure_recall(
    memories: Any, client: Any, encoder: Any, collection: str, target: str, n: int
) -> dict[str, list[float]]:
    """Recall against a bare embed + filtered query, and the embedding alone."""
    from qdrant_client import models

    user_filter = models.Filter(
        must=[models.FieldCondition(key="user_id", match=models.MatchValue(value=target))]
    )

    def raw_query(i: int) -> None:
        vector = encoder.encode(QUERIES[i % len(QUERIES)], convert_to_numpy=True).tolist()
        client.query_points(collection, query=vector, query_filter=user_filter, limit=5)

    return {
        "recall": timed(
            lambda i: memories.recall(target, QUERIES[i % len(QUERIES)], k=5), n, "recall"
        ),
        "raw": timed(raw_query, n, "raw query"),
        "embed": timed(
            lambda i: encoder.encode(QUERIES[i % len(QUERIES)], convert_to_numpy=True),
            n,
            "embed query",
        ),
    }


def measure_writes(
    memories: Any, client: Any, encoder: Any, collection: str, url: str, writes: int
) -> dict[str, list[float]]:
    """remember() with and without extraction, against a bare upsert and a bare chat call."""
    from openai import OpenAI
    from qdrant_client import models

    rng = random.Random(1)
    writer = "user-writer"

    def raw_upsert(i: int) -> None:
        text = fact(rng, 20_000 + i)
        vector = encoder.encode(text, convert_to_numpy=True).tolist()
        point = models.PointStruct(
            id=str(uuid.uuid4()), vector=vector, payload={"user_id": writer, "data": text}
        )
        client.upsert(collection, points=[point])

    extract_n = max(10, writes // 3)
    chat = OpenAI(base_url=url, api_key="x", max_retries=0)
    exchange = [{"role": "assistant", "content": "Noted!"}]
    return {
        "plain": timed(
            lambda i: memories.remember(
                writer, [{"role": "user", "content": fact(rng, 10_000 + i)}], infer=False
            ),
            writes,
            "remember infer=False",
        ),
        "raw_write": timed(raw_upsert, writes, "raw upsert"),
        "inferred": timed(
            lambda i: memories.remember(
                writer,
                [{"role": "user", "content": f"I drink a lot of tea, kind {i}"}, *exchange],
            ),
            extract_n,
            "remember infer=True",
        ),
        "raw_chat": timed(
            lambda i: chat.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": "hi"}]
            ),
            extract_n,
            "raw chat request",
        ),
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from qdrant_client import QdrantClient

    from memory import MemorySettings, UserMemory

    server = ThreadingHTTPServer(("127.0.0.1", 0), Responder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    with tempfile.TemporaryDirectory() as tmp:
        client = QdrantClient(path=str(Path(tmp) / "qdrant"))
        settings = MemorySettings(
            DATA_DIR=Path(tmp), MEMORY_LLM_URL=url, MEMORY_LLM_MODEL="bench", MEMORY_TIMEOUT_S=10
        )
        memories = UserMemory(settings, client)
        start = time.perf_counter()
        memories.warm_up()
        print(f"mem0 + embedder ready in {time.perf_counter() - start:.1f} s")
        mem0 = memories._mem0()
        encoder = mem0.embedding_model.model  # the very SentenceTransformer mem0 uses

        users = [f"user-{n}" for n in range(args.users)]
        seed(mem0, users, args.per_user, random.Random(0))
        points = client.count(settings.collection).count
        print(f"{points} memories, {args.per_user} for the measured user among {args.users}")
        col = settings.collection
        r = measure_recall(memories, client, encoder, col, users[0], args.queries)
        w = measure_writes(memories, client, encoder, col, url, args.writes)

        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"\n{os.cpu_count()} CPUs, load average now {load} (other work shares the CPU), "
            f"torch threads {torch.get_num_threads()}"
        )
        report("recall k=5", r["recall"], "embed + query_points (same filter)", r["raw"], "p95<=20")
        report("recall k=5", r["recall"], "embedding the query alone", r["embed"], "p95<=20")
        report(
            "remember infer=False",
            w["plain"],
            "embed + upsert one point",
            w["raw_write"],
            "p95<=100",
        )
        report(
            "remember infer=True",
            w["inferred"],
            "bare chat request to responder",
            w["raw_chat"],
            "-",
        )
        memories.close()
        client.close()
    server.shutdown()


if __name__ == "__main__":
    main()
