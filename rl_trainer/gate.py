"""The evaluation gate: does the candidate beat what serves now, on turns it never saw?

Both the candidate and the serving adapter (or the base model) answer every held-out
prompt through the model server at temperature 0, and the judge compares each pair in
both orders. The candidate passes when its win rate (ties count half) reaches the
threshold *and* neither its citation validity nor its honest "not in the documents"
rate gets worse: a judge can be fooled by a confident answer, these checks cannot.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from backend.client import ModelClient
from rl_trainer.judge import Judge
from rl_trainer.rewards import citation_validity, honest_not_in_documents

logger = logging.getLogger(__name__)
INFO_KEYS = ("num_sources", "answerable", "answer")


@dataclass
class GateResult:
    """The gate's verdict and the figures behind it."""

    passed: bool
    candidate: str
    baseline: str
    threshold: float
    prompts: int = 0
    judged: int = 0
    win_rate: float | None = None
    citation_validity: dict[str, float | None] = field(default_factory=dict)
    not_in_documents: dict[str, float | None] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        return asdict(self)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _worse(new: float | None, old: float | None) -> bool:
    return new is not None and old is not None and new < old - 1e-9


def gate(
    client: ModelClient,
    judge: Judge,
    heldout: list[dict[str, Any]],
    *,
    candidate: str,
    baseline: str,
    threshold: float = 0.55,
    max_tokens: int = 256,
    limit: int | None = None,
) -> GateResult:
    """Answer ``heldout`` with ``candidate`` and ``baseline`` (served names) and compare."""
    rows = heldout[:limit] if limit is not None else heldout
    result = GateResult(False, candidate, baseline, threshold, prompts=len(rows))
    if not rows:
        result.reasons.append("no held-out prompts: collect more rated turns before gating")
        return result
    wins: list[float] = []
    answers: dict[str, list[str]] = {candidate: [], baseline: []}
    for row in tqdm(rows, desc=f"gate {candidate} vs {baseline}", unit="prompt"):
        for model in (candidate, baseline):
            reply = client.chat(
                row["prompt"], model=model, temperature=0.0, max_tokens=max_tokens, seed=0
            )
            answers[model].append(reply.text)
        info = {k: row.get(k) for k in INFO_KEYS}
        preference = judge.compare(
            row["prompt"], answers[candidate][-1], answers[baseline][-1], info
        )
        if preference is not None:
            wins.append(preference)
    result.judged = len(wins)
    result.win_rate = sum(wins) / len(wins) if wins else None
    columns = {k: [r.get(k) for r in rows] for k in INFO_KEYS}
    for model in (candidate, baseline):
        result.citation_validity[model] = _mean(citation_validity(answers[model], **columns))
        result.not_in_documents[model] = _mean(honest_not_in_documents(answers[model], **columns))
    if result.win_rate is None:
        result.reasons.append("the judge could not compare any pair")
    elif result.win_rate < threshold:
        result.reasons.append(f"win rate {result.win_rate:.2f} below {threshold:.2f}")
    if _worse(result.citation_validity[candidate], result.citation_validity[baseline]):
        result.reasons.append("citation validity got worse")
    if _worse(result.not_in_documents[candidate], result.not_in_documents[baseline]):
        result.reasons.append('honest "not in the documents" rate got worse')
    result.passed = not result.reasons
    logger.info(
        "gate %s vs %s: win rate %s over %d judged pairs -> %s",
        candidate,
        baseline,
        "n/a" if result.win_rate is None else f"{result.win_rate:.2f}",
        result.judged,
        "PASS" if result.passed else "FAIL (" + "; ".join(result.reasons) + ")",
    )
    return result
