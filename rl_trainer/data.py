"""Training data snapshots from the store: DPO pairs, GRPO prompts and a held-out slice.

Only what is stored is used, so an adapter can be traced back to its turns: the turn
ids of every split are written beside the data and go into the adapter's manifest.
Left out, and counted: turns of users an admin marked untrusted, failed or empty
turns, and turns with no signal at all (no counted rating, correction or judgment).
Ratings are capped per user per day, so one user cannot steer training alone. The
held-out slice is split by *thread* (never sees training), deterministically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.store.db import Database
from app.store.feedback import training_signals
from app.store.models import Turn
from rl_trainer.config import Recipe

logger = logging.getLogger(__name__)

TRAIN_FILE, HELDOUT_FILE, SNAPSHOT_FILE = "train.jsonl", "heldout.jsonl", "snapshot.json"
# Appended to GSM8K questions so the exact-answer reward can find the final number.
GSM8K_INSTRUCTION = "Solve step by step, then give the final number after '####'."


@dataclass
class Signal:
    """What a turn tells training: its score (0..1) and a user's correction, if any."""

    turn: Turn
    score: float | None
    corrected: str | None


@dataclass
class Snapshot:
    """A dataset written to ``path``: rows per split and what was left out."""

    path: Path
    algo: str
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)
    turn_ids: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts and turn ids, for the manifest."""
        return {"algo": self.algo, "counts": self.counts, "turn_ids": self.turn_ids}


def _day(turn_or_feedback: Any) -> str:
    return turn_or_feedback.created_at.date().isoformat()


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _info(turn: Turn) -> dict[str, Any]:
    return {"num_sources": len(turn.retrieved or []), "answerable": None, "answer": None}


def collect_signals(
    db: Database, recipe: Recipe, judge_model: str | None, counts: dict[str, int]
) -> list[Signal]:
    """Turns worth learning from, each with its (capped) signal; ``counts`` says what fell out."""
    untrusted, turns, feedback = training_signals(db)
    # The rating cap: the first N ratings of each user on each day count, the rest do not.
    used: dict[tuple[str, str], int] = defaultdict(int)
    counted: set[str] = set()
    for fb in feedback:
        if fb.user_id in untrusted:
            continue
        key = (fb.user_id, _day(fb))
        if used[key] < recipe.max_ratings_per_user_per_day:
            used[key] += 1
            counted.add(fb.id)
        else:
            counts["ratings_over_cap"] += 1
    signals: list[Signal] = []
    for turn in turns:
        counts["turns_seen"] += 1
        if turn.user_id in untrusted:
            counts["untrusted"] += 1
            continue
        if turn.error or not turn.answer or not turn.messages:
            counts["failed_or_empty"] += 1
            continue
        ratings = [fb for fb in turn.feedback if fb.id in counted]
        corrected = next((fb.corrected_answer for fb in ratings if fb.corrected_answer), None)
        score: float | None = None
        if ratings:
            score = sum(1.0 if fb.rating > 0 else 0.0 for fb in ratings) / len(ratings)
        else:
            judgments = [
                j for j in turn.judgments if judge_model is None or j.judge_model == judge_model
            ]
            if judgments:
                score = max(judgments, key=lambda j: j.created_at).overall
        if score is None and corrected is None:
            counts["no_signal"] += 1
            continue
        signals.append(Signal(turn, score, corrected))
    counts["with_signal"] = len(signals)
    return signals


def split_by_thread(signals: list[Signal], fraction: float) -> tuple[list[Signal], list[Signal]]:
    """``(train, heldout)``: whole threads go to one side, chosen by a stable hash."""
    threads = sorted(
        {s.turn.thread_id for s in signals}, key=lambda t: hashlib.sha256(t.encode()).hexdigest()
    )
    n = math.ceil(fraction * len(threads)) if fraction > 0 and len(threads) >= 2 else 0
    held = set(threads[:n])
    return (
        [s for s in signals if s.turn.thread_id not in held],
        [s for s in signals if s.turn.thread_id in held],
    )


def assistant(text: str) -> list[dict[str, str]]:
    """A completion in TRL's conversational form."""
    return [{"role": "assistant", "content": text}]


def dpo_pairs(signals: list[Signal], margin: float) -> list[dict[str, Any]]:
    """Pairs from corrections, and from differently scored answers to the same question."""
    pairs: list[dict[str, Any]] = []
    for s in signals:
        if s.corrected and s.corrected.strip() != s.turn.answer.strip():
            pairs.append(
                {
                    "prompt": s.turn.messages,
                    "chosen": assistant(s.corrected),
                    "rejected": assistant(s.turn.answer),
                    "source": "correction",
                    "turn_ids": [s.turn.id],
                }
            )
    groups: dict[str, list[Signal]] = defaultdict(list)
    for s in signals:
        if s.score is not None:
            groups[_key(s.turn.standalone_query or s.turn.question)].append(s)
    for group in groups.values():
        ranked = sorted(group, key=lambda s: s.score or 0.0, reverse=True)
        for i, better in enumerate(ranked):
            for worse in ranked[i + 1 :]:
                if (better.score or 0.0) - (worse.score or 0.0) < margin:
                    continue
                if better.turn.answer.strip() == worse.turn.answer.strip():
                    continue
                pairs.append(
                    {
                        "prompt": better.turn.messages,
                        "chosen": assistant(better.turn.answer),
                        "rejected": assistant(worse.turn.answer),
                        "source": "scores",
                        "turn_ids": [better.turn.id, worse.turn.id],
                    }
                )
    return pairs


def grpo_prompt(turn: Turn) -> dict[str, Any]:
    """A GRPO row: the exact stored prompt plus the columns the rewards read."""
    return {"prompt": turn.messages, **_info(turn), "turn_id": turn.id}


def heldout_row(turn: Turn) -> dict[str, Any]:
    """A gate row: the prompt, the reward columns, and what was answered then."""
    return {
        "prompt": turn.messages,
        **_info(turn),
        "turn_id": turn.id,
        "thread_id": turn.thread_id,
        "stored_answer": turn.answer,
    }


def fresh_pairs(
    rows: list[dict[str, Any]],
    client: Any,
    model: str,
    judge: Any,
    n: int,
    seed: int,
    max_tokens: int,
) -> list[dict[str, Any]]:
    """Pairs sampled from ``model`` (two answers per prompt) and ranked by the pairwise judge."""
    from tqdm import tqdm

    rng = random.Random(seed)
    picked = rng.sample(rows, min(n, len(rows)))
    pairs: list[dict[str, Any]] = []
    for row in tqdm(picked, desc="sampling fresh pairs", unit="prompt", disable=not picked):
        a, b = (
            r.text
            for r in client.chat_samples(
                row["prompt"], 2, model=model, temperature=1.0, seed=seed, max_tokens=max_tokens
            )
        )
        preference = judge.compare(row["prompt"], a, b, {"num_sources": row["num_sources"]})
        if preference is None or preference == 0.5 or a.strip() == b.strip():
            continue
        chosen, rejected = (a, b) if preference > 0.5 else (b, a)
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": assistant(chosen),
                "rejected": assistant(rejected),
                "source": "fresh",
                "turn_ids": [row["turn_id"]],
            }
        )
    return pairs


def jsonl_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a ``{question, answer}`` JSONL file (e.g. GSM8K) as GRPO prompts."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(rows) >= limit:
                break
            item = json.loads(line)
            question = f"{item['question']}\n\n{GSM8K_INSTRUCTION}"
            rows.append(
                {
                    "prompt": [{"role": "user", "content": question}],
                    "num_sources": None,
                    "answerable": None,
                    "answer": item["answer"],
                    "turn_id": None,
                }
            )
    return rows


def write_snapshot(snapshot: Snapshot) -> Snapshot:
    """Write the splits and their summary under ``snapshot.path``."""
    snapshot.path.mkdir(parents=True, exist_ok=True)
    for name, rows in ((TRAIN_FILE, snapshot.train), (HELDOUT_FILE, snapshot.heldout)):
        with (snapshot.path / name).open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (snapshot.path / SNAPSHOT_FILE).write_text(json.dumps(snapshot.summary(), indent=2))
    return snapshot


def read_snapshot(path: Path) -> Snapshot:
    """A snapshot written by :func:`write_snapshot`."""
    summary = json.loads((path / SNAPSHOT_FILE).read_text())
    splits = []
    for name in (TRAIN_FILE, HELDOUT_FILE):
        with (path / name).open(encoding="utf-8") as handle:
            splits.append([json.loads(line) for line in handle if line.strip()])
    return Snapshot(
        path, summary["algo"], splits[0], splits[1], summary["counts"], summary["turn_ids"]
    )


def build_data(
    db: Database,
    recipe: Recipe,
    out: Path,
    *,
    judge_model: str | None = None,
    dataset_path: Path | None = None,
    sampler: Any = None,
) -> Snapshot:
    """Snapshot the recipe's dataset from the store (or ``dataset_path``) into ``out``.

    Args:
        db: the store.
        recipe: decides the algorithm, held-out share, rating cap and pairing margin.
        out: directory the snapshot is written to.
        judge_model: only judgments by this judge count (None: any judge).
        dataset_path: a ``{question, answer}`` JSONL used instead of the store (GRPO).
        sampler: ``(client, model, judge)`` for fresh DPO pairs when ``recipe.fresh_pairs``.
    """
    counts: dict[str, int] = defaultdict(int)
    if dataset_path is not None:
        rows = jsonl_rows(dataset_path, recipe.dataset_limit)
        n_held = math.ceil(recipe.heldout_fraction * len(rows)) if len(rows) >= 2 else 0
        train, heldout = rows[n_held:], rows[:n_held]
        counts.update(dataset_rows=len(rows), train=len(train), heldout=len(heldout))
        snapshot = Snapshot(out, recipe.algo, train, heldout, dict(counts), {})
        return write_snapshot(snapshot)
    signals = collect_signals(db, recipe, judge_model, counts)
    train_signals, held_signals = split_by_thread(signals, recipe.heldout_fraction)
    if recipe.algo == "dpo":
        train_rows = dpo_pairs(train_signals, recipe.judge_margin)
        if recipe.fresh_pairs and sampler is not None:
            client, model, judge = sampler
            prompts = [grpo_prompt(s.turn) for s in train_signals]
            train_rows += fresh_pairs(
                prompts,
                client,
                model,
                judge,
                recipe.fresh_pairs,
                recipe.seed,
                recipe.max_completion_length,
            )
        for source in ("correction", "scores", "fresh"):
            counts[f"pairs_{source}"] = sum(1 for r in train_rows if r["source"] == source)
    else:
        train_rows = [grpo_prompt(s.turn) for s in train_signals]
    heldout = [heldout_row(s.turn) for s in held_signals]
    counts.update(train=len(train_rows), heldout=len(heldout))
    # The turns training actually reads: those in pairs (DPO), every prompt (GRPO).
    used = {t for r in train_rows for t in r.get("turn_ids", [r.get("turn_id")]) if t}
    turn_ids = {
        "train": sorted(used),
        "heldout": sorted({s.turn.id for s in held_signals}),
    }
    snapshot = Snapshot(out, recipe.algo, train_rows, heldout, dict(counts), turn_ids)
    logger.info("dataset: %s", json.dumps(dict(counts)))
    return write_snapshot(snapshot)
