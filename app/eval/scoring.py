"""What one question got, and the figures of a whole run with their targets.

Each answer is scored by ``app.store.answer_checks`` (token recall/F1, citations,
repetition), which the trainer's gate shares; an answer "declines" when it says the
documents lack the answer (the same phrases the trainer's reward reads).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Outcome:
    """What one question got."""

    id: str
    question: str
    answerable: bool
    answer: str
    declined: bool
    recall: float
    f1: float
    cited_valid: bool
    cited_gold: bool
    attached_citations: bool
    repetition: bool
    at_token_cap: bool
    gold_retrieved: bool
    latency_s: float
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """The outcome as a JSON-ready dict."""
        return asdict(self)


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def figures(outcomes: list[Outcome]) -> dict[str, Any]:
    """The run's figures; a share is None when no question counts towards it."""
    answerable = [o for o in outcomes if o.answerable]
    unanswerable = [o for o in outcomes if not o.answerable]
    answered = [o for o in outcomes if not o.declined and not o.error]
    latencies = sorted(o.latency_s for o in outcomes)
    return {
        "questions": len(outcomes),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "errors": sum(1 for o in outcomes if o.error),
        "answerable_recall": _mean([o.recall for o in answerable]),
        "answerable_f1": _mean([o.f1 for o in answerable]),
        "answers_citing_valid_source": _share([o.cited_valid for o in answered]),
        "answers_citing_gold_passage": _share([o.cited_gold for o in answered if o.answerable]),
        "citations_attached_share": _share([o.attached_citations for o in answered]),
        "unanswerable_declined": _share([o.declined for o in unanswerable]),
        "answerable_wrongly_declined": _share([o.declined for o in answerable]),
        "answers_ending_in_repetition": _share([o.repetition for o in answered]),
        "answers_at_token_cap": _share([o.at_token_cap for o in answered]),
        "gold_passage_retrieved": _share([o.gold_retrieved for o in answerable]),
        "latency_p50_s": round(latencies[len(latencies) // 2], 2) if latencies else None,
        "latency_p95_s": (
            round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2)
            if latencies
            else None
        ),
    }


TARGETS: dict[str, tuple[str, float]] = {
    "answers_citing_valid_source": (">=", 0.90),
    "unanswerable_declined": (">=", 0.50),
    "answerable_wrongly_declined": ("<=", 0.15),
    "answerable_recall": (">=", 0.30),
    "answers_ending_in_repetition": ("<=", 0.05),
}
"""Issue 14's targets for SmolLM2 on the shared ClapNQ dev set."""


def meets(name: str, value: float | None) -> bool | None:
    """Whether ``value`` meets the target named ``name`` (None: no target or no value)."""
    if name not in TARGETS or value is None:
        return None
    op, bound = TARGETS[name]
    return value >= bound if op == ">=" else value <= bound
