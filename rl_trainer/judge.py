"""The LLM judge: a versioned pointwise rubric for stored turns, and pairwise A-vs-B.

Scores are asked for as JSON at temperature 0. Output that cannot be parsed is *no
judgment* (counted and logged), never a made-up score: a silent default would train
the adapter towards whatever the default favours. The pairwise judge is asked in both
orders and the two verdicts averaged, which cancels the judge's position bias.

A rule-based judge (``rule:<reward>``) applies a reward function instead of a model; it
exists for toy loops and tests where a tiny random model cannot judge anything.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tqdm import tqdm

from app.store.db import Database
from app.store.feedback import add_judgment, rated_turn_ids, training_signals, turns_to_judge
from app.store.models import Turn
from backend.client import ModelClient
from backend.errors import ModelServerError
from rl_trainer.rewards import REWARDS

logger = logging.getLogger(__name__)

RUBRIC_VERSION = "rag-v1"
CRITERIA = ("groundedness", "helpfulness", "citations")

POINTWISE_SYSTEM = f"""You grade answers of a retrieval-augmented assistant ({RUBRIC_VERSION}).
Read the conversation the assistant was given (its instructions, numbered sources and the
user's question) and its answer. Score from 1 (bad) to 5 (excellent):
- groundedness: every claim is supported by the numbered sources (5 = fully supported);
- helpfulness: the answer addresses the question directly and concisely;
- citations: cited numbers [n] exist among the sources and support the claims next to them;
  an answer that honestly says the sources lack the answer scores 5 when they do.
Reply with JSON only:
{{"groundedness": n, "helpfulness": n, "citations": n, "rationale": "<one sentence>"}}"""

PAIRWISE_SYSTEM = """You compare two answers of a retrieval-augmented assistant to the same
conversation (its instructions, numbered sources and the user's question). The better answer
is grounded in the sources, cites them correctly with [n], answers the question, and says
honestly when the sources do not contain the answer. Ignore length and the order shown.
Reply with JSON only: {"winner": "A" or "B" or "tie", "rationale": "<one sentence>"}"""

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
# The replies are decoded under these schemas (structured outputs), so even a small judge
# model answers in shape; the values are still range-checked by the parsers below.
_SCORE = {"type": "integer", "enum": [1, 2, 3, 4, 5]}
_RATIONALE = {"type": "string", "maxLength": 300}
POINTWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {**{name: _SCORE for name in CRITERIA}, "rationale": _RATIONALE},
    "required": [*CRITERIA, "rationale"],
    "additionalProperties": False,
}
PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"winner": {"enum": ["A", "B", "tie"]}, "rationale": _RATIONALE},
    "required": ["winner", "rationale"],
    "additionalProperties": False,
}


@dataclass
class Verdict:
    """A pointwise judgment: per-criterion scores (1..5), overall in 0..1, and why."""

    scores: dict[str, float]
    overall: float
    rationale: str = ""


def _json_object(raw: str) -> dict[str, Any] | None:
    match = _JSON_OBJECT.search(raw or "")
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_pointwise(raw: str) -> Verdict | None:
    """The verdict in the judge's reply, or None when any criterion is missing or off-scale."""
    data = _json_object(raw)
    if data is None:
        return None
    scores: dict[str, float] = {}
    for name in CRITERIA:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not 1 <= value <= 5:
            return None
        scores[name] = float(value)
    overall = sum((s - 1) / 4 for s in scores.values()) / len(scores)
    return Verdict(scores, overall, str(data.get("rationale", ""))[:2000])


def parse_pairwise(raw: str) -> Literal["A", "B", "tie"] | None:
    """``A``, ``B`` or ``tie`` from the judge's reply; None when it names none of them."""
    data = _json_object(raw)
    if data is None:
        return None
    winner = str(data.get("winner", "")).strip().strip(".").upper()
    if winner in ("A", "B"):
        return winner  # type: ignore[return-value]
    if winner == "TIE":
        return "tie"
    return None


def transcript(messages: list[dict[str, Any]]) -> str:
    """The conversation as the judge reads it."""
    return "\n\n".join(f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in messages)


class Judge(Protocol):
    """What the trainer needs from a judge."""

    @property
    def model(self) -> str:
        """The judge's name as stored in judgments."""
        ...

    rubric_version: str
    asked: int  # replies asked for (a pairwise comparison asks two)
    failures: int  # replies that could not be parsed

    def score(
        self, messages: list[dict[str, Any]], answer: str, info: Mapping[str, Any]
    ) -> Verdict | None:
        """Pointwise verdict of ``answer`` to ``messages``; None when there is none."""
        ...

    def compare(
        self, messages: list[dict[str, Any]], a: str, b: str, info: Mapping[str, Any]
    ) -> float | None:
        """How much better ``a`` is than ``b``: 1 win, 0.5 tie, 0 loss; None when unknown."""
        ...


@dataclass
class LLMJudge:
    """A judge model behind an OpenAI-compatible server."""

    client: ModelClient
    model: str
    max_tokens: int = 300
    rubric_version: str = RUBRIC_VERSION
    asked: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)

    def _ask(self, system: str, user: str, schema: dict[str, Any]) -> str | None:
        self.asked += 1
        try:
            result = self.client.chat(
                [{"role": "system", "content": system}, {"role": "user", "content": user}],
                model=self.model,
                temperature=0.0,
                max_tokens=self.max_tokens,
                seed=0,
                json_schema=schema,
            )
        except ModelServerError as exc:
            logger.warning("judge %s failed: %s", self.model, exc)
            return None
        return result.text

    def score(
        self, messages: list[dict[str, Any]], answer: str, info: Mapping[str, Any]
    ) -> Verdict | None:
        """Ask the rubric; None (and a warning) when the reply cannot be parsed."""
        raw = self._ask(
            POINTWISE_SYSTEM,
            f"Conversation:\n{transcript(messages)}\n\nAnswer to grade:\n{answer}",
            POINTWISE_SCHEMA,
        )
        verdict = parse_pointwise(raw) if raw is not None else None
        if verdict is None:
            self.failures += 1
            logger.warning("judge reply unparseable, no judgment: %.200r", raw)
        return verdict

    def _pair(self, messages: list[dict[str, Any]], a: str, b: str) -> str | None:
        raw = self._ask(
            PAIRWISE_SYSTEM,
            f"Conversation:\n{transcript(messages)}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}",
            PAIRWISE_SCHEMA,
        )
        winner = parse_pairwise(raw) if raw is not None else None
        if winner is None:
            self.failures += 1
            logger.warning("pairwise judge reply unparseable: %.200r", raw)
        return winner

    def compare(
        self, messages: list[dict[str, Any]], a: str, b: str, info: Mapping[str, Any]
    ) -> float | None:
        """Both orders, averaged; an unparseable order is left out."""
        values = []
        first = self._pair(messages, a, b)
        if first is not None:
            values.append({"A": 1.0, "B": 0.0, "tie": 0.5}[first])
        second = self._pair(messages, b, a)
        if second is not None:
            values.append({"A": 0.0, "B": 1.0, "tie": 0.5}[second])
        return sum(values) / len(values) if values else None


@dataclass
class RuleJudge:
    """Scores with a reward function (0..1) instead of a model: for toy loops and tests."""

    reward: str
    rubric_version: str = "rule-v1"
    asked: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)  # a rule always has its say

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ValueError(f"unknown rule judge reward {self.reward!r}; known: {list(REWARDS)}")

    @property
    def model(self) -> str:
        """The judge's name as stored in judgments."""
        return f"rule:{self.reward}"

    def _value(self, answer: str, info: Mapping[str, Any]) -> float | None:
        self.asked += 1
        return REWARDS[self.reward]([answer], **{k: [v] for k, v in info.items()})[0]

    def score(
        self, messages: list[dict[str, Any]], answer: str, info: Mapping[str, Any]
    ) -> Verdict | None:
        """The reward as a one-criterion verdict; None when the reward has no verdict."""
        value = self._value(answer, info)
        if value is None:
            return None
        return Verdict({self.reward: value}, value, f"rule {self.reward} = {value:g}")

    def compare(
        self, messages: list[dict[str, Any]], a: str, b: str, info: Mapping[str, Any]
    ) -> float | None:
        """1 if ``a`` earns more reward than ``b``, 0 if less, 0.5 on a tie."""
        va, vb = self._value(a, info), self._value(b, info)
        if va is None or vb is None:
            return None
        return 1.0 if va > vb else 0.0 if va < vb else 0.5


def make_judge(spec: str, client: ModelClient | None, model: str | None) -> Judge:
    """The judge a recipe names: ``llm`` (needs a client and model) or ``rule:<reward>``."""
    if spec.startswith("rule:"):
        return RuleJudge(spec.removeprefix("rule:"))
    if client is None or not model:
        raise ValueError("the LLM judge needs a model server (JUDGE_URL) and a model")
    return LLMJudge(client, model)


@dataclass
class JudgeStats:
    """What one judging pass did."""

    judged: int = 0
    unparseable: int = 0
    already: int = 0
    rated_skipped: int = 0  # rated turns over the run's limit (their rating is the signal)


def num_sources(turn: Turn) -> int:
    """How many numbered sources the turn's prompt carried."""
    return len(turn.retrieved or [])


def judge_turns(
    db: Database, judge: Judge, *, limit: int | None = None, rated_limit: int | None = None
) -> JudgeStats:
    """Judge every stored answer this judge and rubric have not judged yet.

    Of the turns users rated, only the first ``rated_limit`` are judged (None: all): their
    rating is the training signal, and a few measure the judge's agreement with thumbs.
    """
    stats = JudgeStats()
    done, turns = turns_to_judge(db, judge.model, judge.rubric_version)
    stats.already = sum(1 for t in turns if t.id in done)
    todo = [t for t in turns if t.id not in done]
    if rated_limit is not None:
        rated = rated_turn_ids(db)
        over = [t.id for t in todo if t.id in rated][rated_limit:]
        stats.rated_skipped = len(over)
        todo = [t for t in todo if t.id not in set(over)]
    todo = todo[:limit]
    for turn in tqdm(todo, desc=f"judging ({judge.model})", unit="turn", disable=not todo):
        verdict = judge.score(turn.messages, turn.answer, {"num_sources": num_sources(turn)})
        if verdict is None:
            stats.unparseable += 1
            continue
        add_judgment(
            db,
            turn_id=turn.id,
            judge_model=judge.model,
            rubric_version=judge.rubric_version,
            scores=verdict.scores,
            overall=verdict.overall,
            rationale=verdict.rationale,
        )
        stats.judged += 1
    logger.info(
        "judged %d turns (%d unparseable, no judgment; %d judged before)",
        stats.judged,
        stats.unparseable,
        stats.already,
    )
    return stats


def parse_rate(judge: Judge, asked_before: int, failed_before: int) -> float | None:
    """Share of the judge's replies parsed since the two counts were taken; None if none."""
    asked = judge.asked - asked_before
    return None if asked == 0 else 1.0 - (judge.failures - failed_before) / asked


def thumbs_agreement(db: Database, judge: Judge) -> dict[str, Any]:
    """How often the judge's latest score (>= 0.5: good) agrees with users' thumbs.

    Only turns with both a rating and a judgment by this judge and rubric count; the
    share of thumbs up decides a turn rated by several users. Untrusted users count too:
    the question is whether the judge sees what people see.
    """
    _, _, turns, _ = training_signals(db)
    agree = total = 0
    for turn in turns:
        mine = [
            j
            for j in turn.judgments
            if j.judge_model == judge.model and j.rubric_version == judge.rubric_version
        ]
        if not mine or not turn.feedback:
            continue
        up = sum(1 for fb in turn.feedback if fb.rating > 0) / len(turn.feedback) >= 0.5
        good = max(mine, key=lambda j: j.created_at).overall >= 0.5
        agree += up == good
        total += 1
    return {"turns": total, "agreement": agree / total if total else None}
