"""Training data snapshots from the store: DPO pairs, GRPO prompts and a held-out slice.

Only what is stored is used, so an adapter can be traced back to its turns: the turn
ids of every split are written beside the data and go into the adapter's manifest.
Left out, and counted: turns of users an admin marked untrusted, failed or empty
turns, turns answered without the model (declined on evidence: nothing for it to learn),
and turns with no signal at all (no counted rating, correction or judgment).
A corrected answer the turn's sources do not support (``min_correction_support``) is
dropped and counted too: training on it teaches the model to say what its documents do
not hold, whether the user erred or is poisoning the adapter.
The held-out slice is split by *thread* (never sees training), deterministically.

The adapter is shared by every user, so a training row holds only what its owner may
share: DPO pairs never mix two users' turns, and a prompt keeps the user's retrieved
sources and memories only when that user opted in (``users.train_on_context``).
No user may dominate either: ratings are capped per user per day, turns with a signal
per user per snapshot, and a snapshot where one of several users holds more than
``max_user_share`` of the training rows is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.agent.words import grounding
from app.store.db import Database
from app.store.feedback import training_signals
from app.store.models import Feedback, Turn
from app.store.prompt_data import without_data
from app.store.records import says_not_in_documents
from rl_trainer.config import Recipe

logger = logging.getLogger(__name__)

TRAIN_FILE, HELDOUT_FILE, SNAPSHOT_FILE = "train.jsonl", "heldout.jsonl", "snapshot.json"
# Appended to GSM8K questions so the exact-answer reward can find the final number.
GSM8K_INSTRUCTION = "Solve step by step, then give the final number after '####'."


class DataError(ValueError):
    """A snapshot the trainer refuses to train on; the message says what to change."""


@dataclass
class Signal:
    """What a turn tells training: its score (0..1), a user's correction, the prompt."""

    turn: Turn
    score: float | None
    corrected: str | None
    prompt: list[dict[str, Any]]  # the turn's messages as far as its user shares them
    rating: float | None = None  # share of thumbs up among the counted ratings


@dataclass
class Snapshot:
    """A dataset written to ``path``: rows per split and what was left out."""

    path: Path
    algo: str
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)
    turn_ids: dict[str, list[str]] = field(default_factory=dict)
    user_shares: dict[str, float] = field(default_factory=dict)  # user id -> share of train

    def summary(self) -> dict[str, Any]:
        """Counts, turn ids and each user's share of the training rows, for the manifest."""
        return {
            "algo": self.algo,
            "counts": self.counts,
            "turn_ids": self.turn_ids,
            "user_shares": self.user_shares,
        }


def _day(turn_or_feedback: Any) -> str:
    return turn_or_feedback.created_at.date().isoformat()


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _info(turn: Turn) -> dict[str, Any]:
    return {"num_sources": len(turn.retrieved or []), "answerable": None, "answer": None}


def shareable_prompt(messages: list[dict[str, Any]], with_context: bool) -> list[dict[str, Any]]:
    """The messages a training row may hold: without the user's context unless allowed.

    The agent fences the sources and memories in the user turn (``app.store.prompt_data``),
    so each user message keeps its question alone. Turns stored before that layout held
    the data in the system message after its first blank line; that part is cut too.
    Cutting can only drop too much, never keep a source. The instruction, the question,
    the earlier messages of the thread and the answer stay.
    """
    if with_context:
        return messages
    shared = []
    for m in messages:
        content = str(m.get("content", ""))
        if m.get("role") == "system":
            content = content.split("\n\n", 1)[0]
        elif m.get("role") == "user":
            content = without_data(content)
        shared.append({**m, "content": content})
    return shared


def counted_ratings(
    feedback: list[Feedback], untrusted: set[str], cap: int, counts: dict[str, int]
) -> set[str]:
    """Ids of the ratings that count: the first ``cap`` of each user on each day."""
    used: dict[tuple[str, str], int] = defaultdict(int)
    counted: set[str] = set()
    for fb in feedback:
        if fb.user_id in untrusted:
            continue
        key = (fb.user_id, _day(fb))
        if used[key] < cap:
            used[key] += 1
            counted.add(fb.id)
        else:
            counts["ratings_over_cap"] += 1
    return counted


def cap_per_user(signals: list[Signal], cap: int, counts: dict[str, int]) -> list[Signal]:
    """The ``cap`` most recent signals of each user, in their original (oldest first) order."""
    by_user: dict[str, list[Signal]] = defaultdict(list)
    for s in sorted(signals, key=lambda s: s.turn.created_at):
        by_user[s.turn.user_id].append(s)
    kept = {s.turn.id for group in by_user.values() for s in group[-cap:]}
    counts["turns_over_cap"] += len(signals) - len(kept)
    return [s for s in signals if s.turn.id in kept]


def collect_signals(
    db: Database,
    recipe: Recipe,
    judge_model: str | None,
    counts: dict[str, int],
    stale: frozenset[str | None] = frozenset(),
) -> list[Signal]:
    """Turns worth learning from, each with its (capped) signal; ``counts`` says what fell out.

    Turns answered by a version in ``stale`` (None: the base model) are skipped: on-policy
    methods learn little from answers of a policy several versions behind.
    """
    untrusted, shared, turns, feedback = training_signals(db)
    counted = counted_ratings(feedback, untrusted, recipe.max_ratings_per_user_per_day, counts)
    signals: list[Signal] = []
    for turn in turns:
        counts["turns_seen"] += 1
        if turn.user_id in untrusted:
            counts["untrusted"] += 1
            continue
        if stale and turn.adapter_version in stale:
            counts["stale"] += 1
            continue
        if turn.error or not turn.answer:
            counts["failed_or_empty"] += 1
            continue
        if not turn.messages:  # declined on evidence before any model call: nothing to learn
            counts["no_model_call"] += 1
            continue
        ratings = [fb for fb in turn.feedback if fb.id in counted]
        corrected = next((fb.corrected_answer for fb in ratings if fb.corrected_answer), None)
        if corrected and not grounded(corrected, turn, recipe.min_correction_support):
            counts["ungrounded_corrections"] += 1
            corrected = None
        score: float | None = None
        rating: float | None = None
        if ratings:
            score = rating = sum(1.0 if fb.rating > 0 else 0.0 for fb in ratings) / len(ratings)
        else:
            judgments = [
                j for j in turn.judgments if judge_model is None or j.judge_model == judge_model
            ]
            if judgments:
                score = max(judgments, key=lambda j: j.created_at).overall
        if score is None and corrected is None:
            counts["no_signal"] += 1
            continue
        prompt = shareable_prompt(turn.messages, turn.user_id in shared)
        signals.append(Signal(turn, score, corrected, prompt, rating))
    signals = cap_per_user(signals, recipe.max_turns_per_user, counts)
    counts["with_signal"] = len(signals)
    return signals


def passages(turn: Turn) -> list[str]:
    """The texts of the passages the turn retrieved."""
    return [str(r.get("text") or "") for r in turn.retrieved or []]


def grounded(corrected: str, turn: Turn, minimum: float) -> bool:
    """Whether the turn's sources support ``corrected`` (a decline, or no sources: yes)."""
    texts = passages(turn)
    if minimum <= 0 or not texts or says_not_in_documents(corrected):
        return True
    share = grounding(corrected, texts)
    return share is None or share >= minimum


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
    """Pairs from corrections, and from one user's differently scored answers to one question.

    Answers of two users are never paired: the row would show one user's answer (which
    may quote their documents) to training under the other user's prompt.
    """
    pairs: list[dict[str, Any]] = []
    for s in signals:
        if s.corrected and s.corrected.strip() != s.turn.answer.strip():
            pairs.append(
                {
                    "prompt": s.prompt,
                    "chosen": assistant(s.corrected),
                    "rejected": assistant(s.turn.answer),
                    "source": "correction",
                    "turn_ids": [s.turn.id],
                }
            )
    groups: dict[tuple[str, str], list[Signal]] = defaultdict(list)
    for s in signals:
        if s.score is not None:
            groups[(s.turn.user_id, _key(s.turn.standalone_query or s.turn.question))].append(s)
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
                        "prompt": better.prompt,
                        "chosen": assistant(better.turn.answer),
                        "rejected": assistant(worse.turn.answer),
                        "source": "scores",
                        "turn_ids": [better.turn.id, worse.turn.id],
                    }
                )
    return pairs


def grpo_prompt(signal: Signal) -> dict[str, Any]:
    """A GRPO row: the stored prompt (as far as shared) plus the columns the rewards read.

    ``answerable`` is what the user's feedback shows (:func:`known_answerable`), ``answer``
    the user's corrected answer, if any: the verifiable RAG rewards read both.
    """
    return {
        "prompt": signal.prompt,
        **_info(signal.turn),
        "answerable": known_answerable(signal),
        "answer": signal.corrected or None,
        "turn_id": signal.turn.id,
    }


def known_answerable(signal: Signal) -> bool | None:
    """Whether the user's feedback shows the sources held the answer; None when unknown.

    A corrected answer that declines, or a thumbs-up on a decline, says they did not; a
    corrected answer, or a thumbs-up on an answer, says they did. A thumbs-down says
    nothing certain (the user may dislike the answer, not the decision).
    """
    if signal.corrected:
        return not says_not_in_documents(signal.corrected)
    if signal.rating is not None and signal.rating >= 0.5:
        return not says_not_in_documents(signal.turn.answer)
    return None


def heldout_row(signal: Signal) -> dict[str, Any]:
    """A gate row: the prompt, the reward columns, what was answered then and the feedback.

    The gate only asks the models and the judge; it trains nothing, so its prompts are
    whole: the candidate is measured on what users actually send. The user's corrected
    answer, thumbs and whether the sources held the answer feed the checks that need no
    judge.
    """
    turn = signal.turn
    return {
        "prompt": turn.messages,
        **_info(turn),
        "answerable": known_answerable(signal),
        "turn_id": turn.id,
        "thread_id": turn.thread_id,
        "stored_answer": turn.answer,
        "corrected": signal.corrected,
        "rating": signal.rating,
        "passages": passages(turn),
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
        path,
        summary["algo"],
        splits[0],
        splits[1],
        summary["counts"],
        summary["turn_ids"],
        summary.get("user_shares", {}),  # snapshots from before shares were recorded
    )


def row_turns(row: dict[str, Any]) -> list[str]:
    """The stored turns a training row comes from (none for rows of a dataset file)."""
    return [t for t in row.get("turn_ids", [row.get("turn_id")]) if t]


def user_shares(rows: list[dict[str, Any]], owners: dict[str, str]) -> dict[str, float]:
    """Each user's share of ``rows``, largest first; a row's turns are all one user's."""
    per_user = Counter(owners[turns[0]] for r in rows if (turns := row_turns(r)))
    total = sum(per_user.values())
    return {user: round(n / total, 4) for user, n in per_user.most_common()}


def check_shares(shares: dict[str, float], limit: float) -> None:
    """Refuse a snapshot one of several users dominates (:class:`DataError`).

    A single contributor is a personal deployment, whose one user may train alone.
    """
    if len(shares) < 2:
        if shares:
            logger.info("one user contributed every training row; max_user_share needs 2+")
        return
    user, share = next(iter(shares.items()))
    if share > limit:
        raise DataError(
            f"user {user} holds {share:.0%} of the training rows, above max_user_share="
            f"{limit:g} ({len(shares)} users contributed); one user must not steer the shared "
            f"adapter. Wait for more users' feedback, lower max_turns_per_user, mark the user "
            f'untrusted (PATCH /admin/users/{user} with {{"trusted": false}}), or raise the '
            f"limit for this run: --set max_user_share={math.ceil(share * 100 - 1e-9) / 100:g}"
        )


def dpo_rows(
    signals: list[Signal], recipe: Recipe, sampler: Any, counts: dict[str, int]
) -> list[dict[str, Any]]:
    """The DPO training rows: stored pairs, plus fresh ones when a sampler is given."""
    rows = dpo_pairs(signals, recipe.judge_margin)
    if recipe.fresh_pairs and sampler is not None:
        client, model, judge = sampler
        rows += fresh_pairs(
            [grpo_prompt(s) for s in signals],
            client,
            model,
            judge,
            recipe.fresh_pairs,
            recipe.seed,
            recipe.max_completion_length,
        )
    for source in ("correction", "scores", "fresh"):
        counts[f"pairs_{source}"] = sum(1 for r in rows if r["source"] == source)
    return rows


def build_data(
    db: Database,
    recipe: Recipe,
    out: Path,
    *,
    judge_model: str | None = None,
    dataset_path: Path | None = None,
    sampler: Any = None,
    stale: frozenset[str | None] = frozenset(),
) -> Snapshot:
    """Snapshot the recipe's dataset from the store (or ``dataset_path``) into ``out``.

    Args:
        db: the store.
        recipe: decides the algorithm, held-out share, per-user caps and pairing margin.
        out: directory the snapshot is written to.
        judge_model: only judgments by this judge count (None: any judge).
        dataset_path: a ``{question, answer}`` JSONL used instead of the store (GRPO).
        sampler: ``(client, model, judge)`` for fresh DPO pairs when ``recipe.fresh_pairs``.
        stale: versions (served names; None: the base) whose turns are too old to train on.

    Raises:
        DataError: one of several users holds more than ``recipe.max_user_share`` of the
            training rows (nothing is written).
    """
    counts: dict[str, int] = defaultdict(int)
    if dataset_path is not None:
        rows = jsonl_rows(dataset_path, recipe.dataset_limit)
        n_held = math.ceil(recipe.heldout_fraction * len(rows)) if len(rows) >= 2 else 0
        train, heldout = rows[n_held:], rows[:n_held]
        counts.update(dataset_rows=len(rows), train=len(train), heldout=len(heldout))
        snapshot = Snapshot(out, recipe.algo, train, heldout, dict(counts), {})
        return write_snapshot(snapshot)
    signals = collect_signals(db, recipe, judge_model, counts, stale)
    train_signals, held_signals = split_by_thread(signals, recipe.heldout_fraction)
    if recipe.algo == "dpo":
        train_rows = dpo_rows(train_signals, recipe, sampler, counts)
    else:
        train_rows = [grpo_prompt(s) for s in train_signals]
    shares = user_shares(train_rows, {s.turn.id: s.turn.user_id for s in train_signals})
    check_shares(shares, recipe.max_user_share)
    heldout = [heldout_row(s) for s in held_signals]
    counts.update(train=len(train_rows), heldout=len(heldout), users=len(shares))
    # The turns training actually reads: those in pairs (DPO), every prompt (GRPO).
    turn_ids = {
        "train": sorted({t for r in train_rows for t in row_turns(r)}),
        "heldout": sorted({s.turn.id for s in held_signals}),
    }
    snapshot = Snapshot(out, recipe.algo, train_rows, heldout, dict(counts), turn_ids, shares)
    logger.info("dataset: %s; user shares: %s", json.dumps(dict(counts)), json.dumps(shares))
    return write_snapshot(snapshot)
