"""GRPO reward functions, each a plain function with TRL's reward signature.

``fn(completions, **kwargs) -> list[float | None]``: ``completions`` are strings or
conversations (``[{"role": "assistant", "content": ...}]``), the other keyword
arguments are the dataset's columns repeated per completion (TRL passes them), and
``None`` means "this reward says nothing about this completion" so TRL skips it instead
of reading a zero as a verdict. :data:`REWARDS` maps the names recipes use to them; the
judge's score needs a judge, so :func:`build_rewards` makes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from app.store.answer_checks import ends_in_repetition, recall_f1
from app.store.records import CITATION, says_not_in_documents

RewardFunc = Callable[..., list[float | None]]

LEADING_CITATION = re.compile(r"^\s*" + CITATION.pattern)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def completion_text(completion: Any) -> str:
    """The text of a completion, whether plain or conversational."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def _column(values: Sequence[Any] | None, n: int) -> list[Any]:
    return list(values) if values is not None else [None] * n


def citation_validity(
    completions: list[Any], num_sources: Sequence[int | None] | None = None, **_: Any
) -> list[float | None]:
    """Share of the cited numbers that exist among the given sources.

    An answer given sources but citing none scores 0; without sources, an answer that
    cites nothing is not judged (None) and any citation is invalid (0).
    """
    rewards: list[float | None] = []
    for completion, n in zip(completions, _column(num_sources, len(completions)), strict=True):
        cited = [int(m) for m in CITATION.findall(completion_text(completion))]
        if n is None:
            rewards.append(None)
        elif not cited:
            rewards.append(0.0 if n > 0 else None)
        else:
            rewards.append(sum(1 for c in cited if 1 <= c <= n) / len(cited))
    return rewards


def leading_citation(
    completions: list[Any], num_sources: Sequence[int | None] | None = None, **_: Any
) -> list[float | None]:
    """1 when the answer opens with a valid citation marker such as ``[1]``, else 0.

    A deliberately simple, learnable signal: the toy loop and the tests use it as a
    rule-based stand-in for the judge.
    """
    rewards: list[float | None] = []
    for completion, n in zip(completions, _column(num_sources, len(completions)), strict=True):
        match = LEADING_CITATION.match(completion_text(completion))
        valid = match is not None and (n is None or 1 <= int(match.group(1)) <= n)
        rewards.append(1.0 if valid else 0.0)
    return rewards


def honest_not_in_documents(
    completions: list[Any], answerable: Sequence[bool | None] | None = None, **_: Any
) -> list[float | None]:
    """Reward saying "not in the documents" exactly when the sources lack the answer.

    ``answerable`` is True when the sources hold the answer, False when they do not,
    None when unknown (no verdict).
    """
    rewards: list[float | None] = []
    for completion, ok in zip(completions, _column(answerable, len(completions)), strict=True):
        if ok is None:
            rewards.append(None)
            continue
        refused = says_not_in_documents(completion_text(completion))
        rewards.append(1.0 if refused != bool(ok) else 0.0)
    return rewards


def answer_overlap(
    completions: list[Any], answer: Sequence[str | None] | None = None, **_: Any
) -> list[float | None]:
    """Token F1 (SQuAD's) of the completion against the user's corrected answer.

    Rows without a correction, or whose correction declines (``honest_not_in_documents``
    judges those), get no verdict.
    """
    rewards: list[float | None] = []
    for completion, ref in zip(completions, _column(answer, len(completions)), strict=True):
        if not ref or says_not_in_documents(str(ref)):
            rewards.append(None)
        else:
            rewards.append(recall_f1(completion_text(completion), [str(ref)])[1])
    return rewards


def repetition(completions: list[Any], **_: Any) -> list[float | None]:
    """-1 for a completion whose tail loops (the evaluation's own check), else 0."""
    return [-1.0 if ends_in_repetition(completion_text(c)) else 0.0 for c in completions]


def soft_overlong(
    completions: list[Any],
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    max_length: int = 256,
    buffer: int = 64,
    **_: Any,
) -> list[float | None]:
    """DAPO's soft overlong punishment: 0 up to ``max_length - buffer``, then down to -1.

    Lengths are in tokens when ``completion_ids`` are given (TRL passes them), otherwise
    estimated as characters / 4.
    """
    lengths = (
        [len(ids) for ids in completion_ids]
        if completion_ids is not None
        else [len(completion_text(c)) // 4 for c in completions]
    )
    start = max_length - buffer
    rewards: list[float | None] = []
    for length in lengths:
        if length <= start:
            rewards.append(0.0)
        elif length <= max_length:
            rewards.append((start - length) / buffer)
        else:
            rewards.append(-1.0)
    return rewards


def final_number(text: str) -> str | None:
    """The answer of a worked solution: after ``####`` if present, else the last number."""
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    numbers = NUMBER.findall(tail)
    if not numbers:
        return None
    value = numbers[0] if "####" in text else numbers[-1]
    value = value.replace(",", "").rstrip(".")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def exact_answer(
    completions: list[Any], answer: Sequence[str | None] | None = None, **_: Any
) -> list[float | None]:
    """1 when the completion's final number equals the reference answer's, else 0.

    Rows without a reference answer (``answer`` None) get no verdict.
    """
    rewards: list[float | None] = []
    for completion, ref in zip(completions, _column(answer, len(completions)), strict=True):
        if ref is None:
            rewards.append(None)
            continue
        expected = final_number(str(ref))
        got = final_number(completion_text(completion))
        rewards.append(1.0 if expected is not None and got == expected else 0.0)
    return rewards


REWARDS: dict[str, RewardFunc] = {
    fn.__name__: fn
    for fn in (
        citation_validity,
        leading_citation,
        honest_not_in_documents,
        answer_overlap,
        repetition,
        soft_overlong,
        exact_answer,
    )
}


def judge_reward(judge: Any) -> RewardFunc:
    """The judge's pointwise score (0..1) of each completion; None when it cannot tell."""

    def judge_score(
        completions: list[Any], prompts: list[Any] | None = None, **columns: Any
    ) -> list[float | None]:
        keys = [k for k in ("num_sources", "answer", "answerable") if columns.get(k) is not None]
        out: list[float | None] = []
        for i, completion in enumerate(completions):
            info = {k: columns[k][i] for k in keys}
            prompt = prompts[i] if prompts is not None else []
            verdict = judge.score(prompt, completion_text(completion), info)
            out.append(None if verdict is None else verdict.overall)
        return out

    judge_score.__name__ = "judge"
    return judge_score


def build_rewards(
    weights: dict[str, float],
    *,
    judge: Any = None,
    max_completion_length: int = 256,
    overlong_buffer: int = 64,
    extra: dict[str, RewardFunc] | None = None,
) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions and weights a recipe names, ready for ``GRPOTrainer``.

    ``judge`` is the judge's score (needs a judge); ``extra`` adds rewards of your own
    under their names (same signature).
    """
    known = {**REWARDS, **(extra or {})}
    funcs: list[RewardFunc] = []
    for name in weights:
        if name == "judge":
            if judge is None:
                raise ValueError("the 'judge' reward needs a judge; set judge in the recipe")
            funcs.append(judge_reward(judge))
        elif name == "soft_overlong":
            funcs.append(
                _named(soft_overlong, max_length=max_completion_length, buffer=overlong_buffer)
            )
        elif name in known:
            funcs.append(known[name])
        else:
            raise ValueError(f"unknown reward {name!r}; known: {['judge', *known]}")
    return funcs, [float(w) for w in weights.values()]


def _named(fn: RewardFunc, **params: Any) -> RewardFunc:
    """``fn`` with ``params`` bound, keeping its name (TRL logs rewards by name)."""

    def bound(completions: list[Any], **kwargs: Any) -> list[float | None]:
        return fn(completions, **{**kwargs, **params})

    bound.__name__ = fn.__name__
    return bound
