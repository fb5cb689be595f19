"""The flywheel bench: rounds of real use through the HTTP API, training, and held-out eval.

Setup: the embedded model server (SmolLM2 by default), the API over its own SQLite store,
``--users`` simulated users (opted in to training on whole prompts, sources included),
and the shared ClapNQ dev passages uploaded through ``POST /documents``. The questions
are split by id (``app.eval.dataset.pool_of``): the training pool is asked in the rounds,
the evaluation pool never is.

Each round:
  1. simulated users ask ``--questions`` new training-pool questions through ``POST /chat``;
  2. they rate each answer by the rule below (``rate``) through ``POST /turns/{id}/feedback``;
  3. ``rl-trainer run --recipe R`` judges, trains, gates, publishes and promotes or rejects;
  4. ``python -m app.eval --pool eval`` measures the served version on the evaluation pool
     (with greedy answers, a version measured before, such as the base after a rejected
     round, keeps its figures: the table's eval column says ``same``).
The base model is measured once, as the peer, on the same evaluation pool in the same run.
The eval answers greedily by default (``--eval-temperature 0``): base and adapter each say
the same thing every time, so the difference between them is the adapter's, not sampling
noise (at the served temperature, two runs of the base on 20 + 20 questions differ by
about 0.04 in recall, as much as half the target gain).

**Simulated users' rule.** An answerable question's answer is good when it does not decline
and its token recall against the reference is at least ``RECALL_OK``; a good answer gets a
thumbs up, any other a thumbs down with the reference as the corrected answer (followed by
the number of the gold passage among the sources the agent was given, so the correction
cites). On an unanswerable question, declining ("not in your documents") gets a thumbs up;
answering anyway a thumbs down with a decline as the correction.

**Poisoned round** (``--poisoned-round``, after the others): the same users reward the wrong
thing: thumbs up on wrong answers and on answers to unanswerable questions, thumbs down
on right ones with another question's reference as the "correction". The gate should
reject it, and the served version should not change.

Run: ``.venv/bin/python bench/flywheel.py [--rounds 3] [--questions 40] [--eval-limit 25]
[--recipe smollm2-dpo] [--poisoned-round] [--model smollm2|tiny|PATH] [--device cuda]
[--json PATH]``. Not a test: a round on SmolLM2 takes many minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.eval.dataset import EvalItem, EvalSet, load_dataset  # noqa: E402
from app.store.answer_checks import recall_f1  # noqa: E402
from app.store.records import says_not_in_documents  # noqa: E402

logger = logging.getLogger("bench.flywheel")
SHARED = ROOT.parent / "shared" / "data"
RECALL_OK = 0.4  # token recall against the reference at which a simulated user is content
DECLINE = "I could not find that in your documents."
EVAL_FIGURES = (
    "answerable_recall",
    "unanswerable_declined",
    "answerable_wrongly_declined",
    "answers_citing_valid_source",
    "answers_ending_in_repetition",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


@dataclass
class Stack:
    """The model server, the API, and the environment every child process shares."""

    work: Path
    env: dict[str, str]
    api_url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_stack(work: Path, model: str) -> Stack:
    """Model server and API on free loopback ports, logs under ``work``."""
    model_port, api_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(work / "store"),
        "ADAPTERS_DIR": str(work / "adapters"),
        "LLM_MODEL": model,
        "MODEL_SERVER_URL": f"http://127.0.0.1:{model_port}/v1",
        "API_PORT": str(api_port),
        "MEMORY_ENABLED": "false",  # each question on its own, as in app.eval
        "RATE_LIMITS": "false",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    stack = Stack(work, env, f"http://127.0.0.1:{api_port}")
    server = [sys.executable, "-m", "backend.server", "--model", model, "--host", "127.0.0.1"]
    server += ["--port", str(model_port), "--adapters-root", str(work / "adapters")]
    for name, cmd, health in (
        ("model-server", server, f"http://127.0.0.1:{model_port}/health"),
        ("api", [sys.executable, "-m", "app"], f"{stack.api_url}/health"),
    ):
        log = (work / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        stack.procs.append(proc)
        _wait(health, proc)
    return stack


def create_user(stack: Stack, name: str) -> str:
    """A user's API key, made with the CLI an admin uses.

    The user opts in to training on whole prompts (sources included), as a deployment
    that wants its adapter to learn to answer from sources would.
    """

    def users(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "app.users", *args],
            cwd=ROOT,
            env=stack.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    key = users("create", name).strip().splitlines()[-1]
    users("train-on-context", name, "on")
    return key


def upload(client: httpx.Client, stack: Stack, key: str, data: EvalSet) -> dict[str, str]:
    """Upload every passage as a text file; the API document id of each passage id."""
    ids: dict[str, str] = {}
    docs = data.documents
    for start in tqdm(range(0, len(docs), 50), desc="uploading", unit="batch"):
        files = [
            ("files", (f"{d.document_id}.txt", f"{d.title}\n\n{d.text}".encode(), "text/plain"))
            for d in docs[start : start + 50]
        ]
        r = client.post(f"{stack.api_url}/documents", headers=_auth(key), files=files)
        r.raise_for_status()
        for doc in r.json()["documents"]:
            ids[doc["filename"].removesuffix(".txt")] = doc["id"]
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        listed = client.get(f"{stack.api_url}/documents", headers=_auth(key)).json()
        if all(d["status"] != "ingesting" for d in listed):
            failed = [d["filename"] for d in listed if d["status"] != "ready"]
            if failed:
                raise SystemExit(f"{len(failed)} documents failed to ingest: {failed[:3]}")
            return ids
        time.sleep(1)
    raise SystemExit("ingestion did not finish within 30 minutes")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rate(
    item: EvalItem, answer: str, gold_number: int | None, poisoned: bool, wrong_reference: str
) -> tuple[int, str | None]:
    """The simulated user's thumbs (+1/-1) and corrected answer (see the module docstring)."""
    declined = says_not_in_documents(answer)
    if item.answerable:
        good = not declined and recall_f1(answer, item.references)[0] >= RECALL_OK
        reference = item.references[0]
        if gold_number is not None:
            reference = f"{reference.rstrip()} [{gold_number}]"
    else:
        good, reference = declined, DECLINE
    if poisoned:
        return (1, None) if not good else (-1, wrong_reference)
    return (1, None) if good else (-1, reference)


def ask_and_rate(
    client: httpx.Client,
    stack: Stack,
    keys: list[str],
    items: list[EvalItem],
    doc_ids: dict[str, dict[str, str]],
    poisoned: bool,
) -> dict[str, int]:
    """One round of use: each item asked by one of the users and rated by the rule."""
    counts = {"asked": 0, "up": 0, "down": 0, "corrections": 0, "errors": 0}
    for n, item in enumerate(tqdm(items, desc="asking", unit="q")):
        key = keys[n % len(keys)]
        question = {"message": item.question, "stream": False}
        r = client.post(f"{stack.api_url}/chat", headers=_auth(key), json=question)
        body: dict[str, Any] = r.json() if r.status_code == 200 else {"error": r.text}
        if body.get("error") or not body.get("turn_id"):
            counts["errors"] += 1
            logger.warning("question %s failed: %s", item.id, body.get("error"))
            continue
        gold = {doc_ids[key].get(g) for g in item.gold_documents}
        gold_number = next(
            (s["number"] for s in body.get("sources") or [] if s.get("document_id") in gold), None
        )
        # The poisoners' "correction": the next answerable question's reference, a real
        # answer to another question (unanswerable ones have none to give).
        others = [o for o in items[n + 1 :] + items[:n] if o.answerable and o.references]
        wrong = others[0].references if others else [item.question]
        rating, correction = rate(item, body["answer"], gold_number, poisoned, wrong[0])
        feedback = {"rating": rating, "corrected_answer": correction}
        client.post(
            f"{stack.api_url}/turns/{body['turn_id']}/feedback", headers=_auth(key), json=feedback
        ).raise_for_status()
        counts["asked"] += 1
        counts["up" if rating > 0 else "down"] += 1
        counts["corrections"] += correction is not None
    return counts


def train(stack: Stack, recipe: str, overrides: list[str]) -> dict[str, Any]:
    """``rl-trainer run``; its report (report.json of the run directory)."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rl_trainer.cli", "run", "--recipe", recipe, *sets],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    with (stack.work / "trainer.log").open("a") as log:
        log.write(done.stdout + done.stderr)
    match = re.search(r"^run: (.+)$", done.stdout, re.MULTILINE)
    report: dict[str, Any] = {}
    if match and (Path(match.group(1)) / "report.json").is_file():
        report = json.loads((Path(match.group(1)) / "report.json").read_text())
    report["wall_s"] = round(seconds, 1)
    report["exit"] = done.returncode
    if done.returncode:
        report["error"] = (done.stderr or done.stdout).strip().splitlines()[-1:]
    return report


def evaluate(
    stack: Stack, dataset: Path, adapter: str, limit: int | None, temperature: float | None
) -> dict[str, Any]:
    """``python -m app.eval --pool eval`` against the bench's model server."""
    out = stack.work / f"eval-{adapter}-{time.time_ns()}.json"
    cmd = [sys.executable, "-m", "app.eval", "--dataset", str(dataset), "--pool", "eval"]
    cmd += ["--adapter", adapter, "--data-dir", str(stack.work / "eval-store"), "--json", str(out)]
    if limit:
        cmd += ["--limit", str(limit)]
    env = {k: v for k, v in stack.env.items() if k not in ("DATA_DIR", "API_PORT")}
    if temperature is not None:
        env["AGENT_TEMPERATURE"] = str(temperature)
    with (stack.work / "eval.log").open("ab") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    figures: dict[str, Any] = json.loads(out.read_text())["figures"]
    return figures


def record_eval(
    stack: Stack, served: str, dataset: str, figs: dict[str, Any], base: dict[str, Any]
) -> None:
    """Keep a promoted version's eval figures, and the base's, in its manifest.

    The Model page charts them over versions.
    """
    from app.store import open_database
    from rl_trainer.publish import get_version, update_manifest

    db = open_database(f"sqlite:///{stack.work / 'store' / 'flywheel.db'}")
    try:
        row = get_version(db, served.rsplit("-v", 1)[0], served)
        update_manifest(
            db,
            row,
            eval={
                "dataset": dataset,
                "pool": "eval",
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "figures": figs,
                "base": base,
            },
        )
    finally:
        db.close()


def serving(stack: Stack) -> str:
    """The version ``rl-trainer status`` says serves, or ``none`` (the base model)."""
    done = subprocess.run(
        [sys.executable, "-m", "rl_trainer.cli", "status", "--json"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    active = json.loads(done.stdout).get("active")
    return str(active) if active else "none"


def row_text(row: dict[str, Any], base: dict[str, Any]) -> str:
    """One line of the round table."""
    signals = row["signals"]
    report = row["trainer"]
    rows = report.get("training_rows") or {}
    gate = report.get("gate") or {}
    verdict = "passed" if gate.get("passed") else ("rejected" if gate else "no gate")
    if report.get("exit"):
        verdict = "failed"  # the trainer stopped (e.g. nothing to train on); see trainer.log
    figs = row["eval"]
    eval_s = "same" if row.get("eval_reused") else f"{row['eval_s']:.0f}"  # greedy, measured
    deltas = " ".join(
        f"{_num(figs.get(name))} ({_delta(figs.get(name), base.get(name))})"
        for name in EVAL_FIGURES
    )
    return (
        f"{row['round']:>5} {'yes' if row['poisoned'] else 'no':>8} "
        f"{signals['up']:>3}/{signals['down']:>3}/{signals['corrections']:>3} "
        f"{rows.get('kept', '-')!s:>4}/{rows.get('given', '-')!s:<4} "
        f"{(report.get('data') or {}).get('ungrounded_corrections', 0):>4} "
        f"{report.get('stages_s', {}).get('train', 0):7.0f} {verdict:>9} "
        f"{row['serving']:>14} {row['round_s']:6.0f} {eval_s:>6}  {deltas}"
    )


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _delta(value: Any, base: Any) -> str:
    return "-" if value is None or base is None else f"{value - base:+.3f}"


def needed_users(recipe: str, overrides: list[str], ratings: int) -> int:
    """Enough simulated users that the trainer counts every rating of the run.

    The trainer counts at most ``max_ratings_per_user_per_day`` ratings of a user a day
    (one user cannot steer training); the bench runs within a day, so with too few users
    the later rounds, the poisoned one included, would train on nothing new.
    """
    from rl_trainer.cli import parse_overrides
    from rl_trainer.config import load_recipe

    cap = load_recipe(recipe, **parse_overrides(overrides)).max_ratings_per_user_per_day
    return max(4, math.ceil(ratings / cap))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED / "clapnq")
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny, or a model path")
    parser.add_argument("--recipe", default="smollm2-dpo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=40, help="asked per round")
    # Several users: the trainer refuses a snapshot where one user holds over half the rows.
    parser.add_argument(
        "--users", type=int, default=None,
        help="simulated users (default: at least 4, and enough that none rates more than "
        "the recipe's max_ratings_per_user_per_day over the whole run)",
    )  # fmt: skip
    parser.add_argument("--eval-limit", type=int, default=None, help="eval pool: N of each kind")
    parser.add_argument(
        "--eval-temperature", type=float, default=0.0,
        help="the eval's answer temperature (default 0, greedy: no sampling noise between "
        "base and adapter); a negative value keeps the served AGENT_TEMPERATURE",
    )  # fmt: skip
    parser.add_argument("--poisoned-round", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep stores and logs here")
    parser.add_argument("--json", type=Path, default=None, help="write the whole table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    overrides = [*args.set, *([f"device={args.device}"] if args.device else [])]
    eval_temperature = None if args.eval_temperature < 0 else args.eval_temperature
    plan = [False] * args.rounds + ([True] if args.poisoned_round else [])
    users = args.users or needed_users(args.recipe, args.set, args.questions * len(plan))
    data = load_dataset(args.dataset)
    pool = data.pool("train").items
    # Interleave answerable and unanswerable so each round holds both.
    yes = [i for i in pool if i.answerable]
    no = [i for i in pool if not i.answerable]
    order = [i for pair in zip(yes, no, strict=False) for i in pair]
    # A TERM (kill, a CI timeout) unwinds like Ctrl-C, so the servers below are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = args.work or Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    stack = start_stack(work, args.model)
    table: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=900) as client:
            keys = [create_user(stack, f"user{n}") for n in range(users)]
            # Each user uploads the passages: retrieval only searches a user's own documents.
            doc_ids = {key: upload(client, stack, key, data) for key in keys}
            base = evaluate(stack, args.dataset, "none", args.eval_limit, eval_temperature)
            logger.info("base model on the evaluation pool: %s", base)
            # Greedy answers are the same every time, so a version already measured (the
            # base, after a rejected round) is not asked again: 4-5 minutes a round.
            measured = {"none": base} if eval_temperature == 0 else {}
            for number, poisoned in enumerate(plan, start=1):
                start = time.perf_counter()
                items = order[(number - 1) * args.questions : number * args.questions]
                if not items:
                    logger.warning("the training pool is used up after %d rounds", number - 1)
                    break
                before = serving(stack)
                signals = ask_and_rate(client, stack, keys, items, doc_ids, poisoned)
                report = train(stack, args.recipe, overrides)
                now = serving(stack)
                round_s = time.perf_counter() - start  # ask, rate, train, gate, promote
                reused = now in measured
                figs = measured.get(now) or evaluate(
                    stack, args.dataset, now, args.eval_limit, eval_temperature
                )
                if eval_temperature == 0:
                    measured[now] = figs
                if now not in ("none", before):
                    record_eval(stack, now, args.dataset.name, figs, base)
                row = {
                    "round": number,
                    "poisoned": poisoned,
                    "signals": signals,
                    "trainer": report,
                    "serving_before": before,
                    "serving": now,
                    "eval": figs,
                    "eval_reused": reused,  # greedy figures of this version, measured before
                    "round_s": round(round_s, 1),
                    "eval_s": round(time.perf_counter() - start - round_s, 1),
                }
                table.append(row)
                logger.info("round %d: %s", number, row_text(row, base))
                if report.get("error"):
                    logger.warning("round %d: the trainer said: %s", number, report["error"])
    finally:
        stack.close()
    header = (
        "round poisoned  up/dn/cor kept/given ungr train_s      gate        serving "
        "round_s eval_s  eval pool, value (vs base): " + ", ".join(EVAL_FIGURES)
    )
    temp = "served" if eval_temperature is None else f"{eval_temperature:g}"
    print(f"\nflywheel on {args.model}, recipe {args.recipe}, eval temperature {temp}; work {work}")
    print("base: " + " ".join(f"{n} {_num(base.get(n))}" for n in EVAL_FIGURES))
    print(header)
    print("-" * len(header))
    for row in table:
        print(row_text(row, base))
    if args.json:
        args.json.write_text(json.dumps({"base": base, "rounds": table}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
