"""Per-turn overhead of the agent graph + API + store, against the model server alone.

One run starts a scripted model server (``tests/app/responder.py``: an instant,
deterministic OpenAI-compatible server, so model time does not drown the overhead in
noise) and the API as real processes on loopback, asks the same question N times through
``POST /chat``, and for each turn calls the model server directly with the exact messages
the agent sent, streamed as the agent streams. Overhead = API latency − direct model
latency − retrieval time (stored in the turn's timings). Target: overhead p50 <= 15 ms.

Run: ``.venv/bin/python bench/agent.py [--turns 40]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.client import ModelClient  # noqa: E402
from tests.app.conftest import auth, create_user, start_api, start_responder, stop  # noqa: E402

DOC = "Water boils at 100 degrees Celsius at sea level. Ice melts at 0 degrees Celsius."


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    model_url, model_proc = start_responder()
    api = start_api(work / "data", model_url, MEMORY_ENABLED="false", AGENT_TEMPERATURE="0")
    try:
        key = create_user(api, "bench")
        with httpx.Client(timeout=120) as http:
            r = http.post(
                f"{api.url}/documents",
                headers=auth(key),
                files=[("files", ("w.txt", DOC.encode()))],
            )
            doc_id = r.json()["documents"][0]["id"]
            while (
                http.get(f"{api.url}/documents/{doc_id}", headers=auth(key)).json()["status"]
                == "ingesting"
            ):
                time.sleep(0.2)
            engine = create_engine(api.db_url())
            direct = ModelClient(model_url, model="unused", timeout=120)
            rows = []
            for i in range(args.turns + 3):
                start = time.perf_counter()
                body = http.post(
                    f"{api.url}/chat",
                    headers=auth(key),
                    json={"message": "When does water boil?", "stream": False},
                ).json()
                api_ms = (time.perf_counter() - start) * 1000
                with engine.connect() as conn:
                    turn = conn.execute(
                        text("SELECT messages, timings, model FROM turns WHERE id = :i"),
                        {"i": body["turn_id"]},
                    ).one()
                messages = (
                    json.loads(turn.messages) if isinstance(turn.messages, str) else turn.messages
                )
                timings = (
                    json.loads(turn.timings) if isinstance(turn.timings, str) else turn.timings
                )
                start = time.perf_counter()
                # Streamed, as the agent streams: the SDK's chunk parsing is on both sides.
                "".join(direct.stream_chat(messages, model=turn.model, temperature=0.0))
                model_ms = (time.perf_counter() - start) * 1000
                if i >= 3:  # warm-up turns are not counted
                    rows.append((api_ms, model_ms, timings.get("retrieve_ms", 0.0)))
    finally:
        stop(api.proc)
        stop(model_proc)
    api_ms = [r[0] for r in rows]
    model_ms = [r[1] for r in rows]
    retrieve_ms = [r[2] for r in rows]
    overhead = [a - m - r for a, m, r in rows]
    print(f"turns: {len(rows)} (scripted instant model on loopback, memory off)")
    print(f"{'':28}{'p50 ms':>10}{'p95 ms':>10}")
    for name, values in [
        ("API /chat turn", api_ms),
        ("model server direct (peer)", model_ms),
        ("retrieval (in the turn)", retrieve_ms),
        ("overhead graph+API+store", overhead),
    ]:
        print(f"{name:28}{pct(values, 0.5):>10.1f}{pct(values, 0.95):>10.1f}")
    ratio = statistics.median(api_ms) / statistics.median(model_ms)
    print(f"ratio API turn / direct model call (p50): {ratio:.2f}x")
    verdict = "met" if pct(overhead, 0.5) <= 15 else "NOT met"
    print(f"target overhead p50 <= 15 ms: {verdict}")


if __name__ == "__main__":
    main()
