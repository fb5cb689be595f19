"""One online round, live: simulated users chat and rate while ``rl-trainer online`` runs.

The stack of ``bench/flywheel.py`` (embedded model server, API, the shared ClapNQ dev
passages uploaded by every user) plus the online loop as its own process, as
``make run`` with ``ONLINE_TRAINING=true`` starts it. Users ask training-pool questions
in batches and rate them by the flywheel bench's rule; the loop starts a round by itself
once ``--min-signals`` ratings arrived, puts the gate's winner on canary trial for
``--canary-share`` of users, and users keep chatting until the trial is decided
(promoted or rolled back) or the round ends without a canary. It prints the loop's
event log, with each decision's figures, and how long each phase took.

Run: ``.venv/bin/python bench/online_loop.py [--model smollm2] [--recipe smollm2-dpo]
[--set KEY=VALUE] [--min-signals 12] [--canary-min-rated 4] [--max-rounds 2] [--json PATH]``.
Not a test: on SmolLM2 a round takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from flywheel import (  # noqa: E402
    ROOT,
    SHARED,
    Stack,
    ask_and_rate,
    create_user,
    start_stack,
    upload,
)

from app.eval.dataset import load_dataset  # noqa: E402
from app.store import open_database  # noqa: E402
from app.store.loop import loop_state, recent_events  # noqa: E402

logger = logging.getLogger("bench.online")
# What ends the bench: a canary decided, or a monitor pausing the loop. A rejected or failed
# round (too few rows yet) is not an end: users chat on and the next round starts, up to
# --max-rounds rounds.
DECIDED = {"promoted", "rolled_back", "monitor_tripped"}
ROUND_ENDS = {"gate_rejected", "round_failed"}


def start_loop(stack: Stack, recipe: str, overrides: list[str]) -> subprocess.Popen[bytes]:
    """``rl-trainer online`` on the bench's store and model server."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    log = (stack.work / "online.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rl_trainer.cli", "online", "--recipe", recipe, *sets],
        cwd=ROOT,
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.procs.append(proc)
    return proc


def events(stack: Stack) -> list[dict[str, Any]]:
    """The loop's events, oldest first."""
    db = open_database(f"sqlite:///{stack.work / 'store' / 'flywheel.db'}")
    try:
        return [
            {
                "at": e.at.isoformat(timespec="seconds"),
                "kind": e.kind,
                "version": e.version,
                "message": e.message,
                "figures": e.figures,
            }
            for e in reversed(recent_events(db, 200))
        ]
    finally:
        db.close()


def phase(stack: Stack) -> str:
    """``training`` while a round runs, else the last round's status."""
    db = open_database(f"sqlite:///{stack.work / 'store' / 'flywheel.db'}")
    try:
        state = loop_state(db)
        return "training" if state.round_status == "running" else str(state.round_status)
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED / "clapnq")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--recipe", default="smollm2-dpo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8, help="questions asked between looks")
    parser.add_argument("--min-signals", type=int, default=12)
    parser.add_argument("--canary-share", type=float, default=0.5)
    parser.add_argument("--canary-min-rated", type=int, default=4)
    parser.add_argument("--max-rounds", type=int, default=2, help="rounds before giving up")
    parser.add_argument("--timeout-min", type=float, default=60)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.update(
        ONLINE_MIN_SIGNALS=str(args.min_signals),
        ONLINE_POLL_S="2",
        CANARY_SHARE=str(args.canary_share),
        CANARY_MIN_RATED=str(args.canary_min_rated),
    )
    data = load_dataset(args.dataset)
    pool = data.pool("train").items
    yes = [i for i in pool if i.answerable]
    no = [i for i in pool if not i.answerable]
    order = [i for pair in zip(yes, no, strict=False) for i in pair]
    work = args.work or Path(tempfile.mkdtemp(prefix="flywheel-online-"))
    work.mkdir(parents=True, exist_ok=True)
    stack = start_stack(work, args.model)
    timeline: list[tuple[str, float]] = []
    start = time.perf_counter()
    try:
        with httpx.Client(timeout=900) as client:
            keys = [create_user(stack, f"user{n}") for n in range(args.users)]
            doc_ids = {key: upload(client, stack, key, data) for key in keys}
            timeline.append(("setup", time.perf_counter() - start))
            start_loop(stack, args.recipe, args.set)
            asked, deadline = 0, time.monotonic() + args.timeout_min * 60
            while time.monotonic() < deadline:
                kinds = [e["kind"] for e in events(stack)]
                if set(kinds) & DECIDED or sum(k in ROUND_ENDS for k in kinds) >= args.max_rounds:
                    break
                if phase(stack) == "training":
                    time.sleep(5)  # users would chat on; here the 2 cores are the trainer's
                    continue
                batch = order[asked : asked + args.batch]
                if not batch:
                    logger.warning("the training pool is used up")
                    break
                counts = ask_and_rate(client, stack, keys, batch, doc_ids, poisoned=False)
                asked += len(batch)
                logger.info("asked %d so far; last batch %s", asked, counts)
                time.sleep(3)  # the loop's next look
            timeline.append(("asked", float(asked)))
    finally:
        stack.close()
    log = events(stack)
    timeline.append(("total_s", time.perf_counter() - start))
    print(f"\nonline loop on {args.model}, recipe {args.recipe}; work dir {work}")
    for event in log:
        version = f" [{event['version']}]" if event["version"] else ""
        print(f"{event['at']} {event['kind']:<18}{version} {event['message']}")
    for event in log:
        if event["kind"] in DECIDED | ROUND_ENDS | {"canary_started"} and event["figures"]:
            print(f"\n{event['kind']} figures:\n{json.dumps(event['figures'], indent=2)}")
    print("\n" + ", ".join(f"{name} {value:.0f}" for name, value in timeline))
    if args.json:
        args.json.write_text(json.dumps({"events": log, "timeline": timeline}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
