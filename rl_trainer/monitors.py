"""Reward-hacking monitors: figures of a set of answers, and limits on how far they move.

A policy trained on a reward learns whatever raises the reward, including what the
reward did not mean to ask for: longer answers (judges and users both lean towards
length), stock phrases, declining whenever unsure, citations that look right but name
sources it was not given, and answers that please the judge but not the users. Each of
those shows in a cheap figure of the answers themselves, so the same figures serve the
canary (canary answers against control answers on live traffic) and, for the figures
TRL logs (KL, completion length), training (:mod:`rl_trainer.kl_control`).

This module imports nothing heavy: the API's canary code uses it on every decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from app.store.answer_checks import citations_valid
from app.store.records import says_not_in_documents

# Below this many (judge, thumbs) pairs the agreement is too noisy to act on: one pair
# moves it by 20 points.
MIN_AGREEMENT_PAIRS = 5


@dataclass
class AnswerSample:
    """One answer a version gave, with what is known about it."""

    answer: str
    n_sources: int  # sources numbered in the prompt (valid citations are 1..n_sources)
    rating: int | None = None  # the user's thumbs: +1 or -1
    judge: float | None = None  # the LLM judge's overall score, 0..1


@dataclass
class MonitorLimits:
    """How far each figure may move before its monitor trips; ``None`` turns one off.

    Canary limits compare the canary against control on the same traffic, so what the
    traffic itself changes (questions, documents) cancels out; training limits compare a
    run with its own start.
    """

    # Length hacking shows as steady growth (Singhal et al. 2023, "A Long Way to Go:
    # Investigating Length Correlations in RLHF"); no reward here asks for answers half
    # again as long (or half as long), while a tuned version's ordinary changes in
    # wording stay well inside that. Relative to control (canary) or the first logged
    # mean completion length (training).
    max_length_drift: float | None = 0.5
    # distinct-2 (Li et al. 2016) over answers to different questions is high, as they
    # share few word pairs; 15 points fewer distinct pairs means answers collapsing onto
    # stock phrases or one template, a collapse too large for sampling noise at 10+ answers.
    max_distinct_2_drop: float | None = 0.15
    # Declining is the cheapest way never to be wrong, and the citation and
    # honesty rewards do not punish it on answerable questions; 20 more points of
    # "not in the documents" on the same traffic is a policy refusing, not a data shift.
    max_declining_rise: float | None = 0.20
    # The base cites a valid source in ~89% of its answers (README, ClapNQ dev); losing
    # 10 points means citing sources it was not given, to look grounded.
    max_citation_validity_drop: float | None = 0.10
    # Below 0.5 the judge agrees with users' thumbs less often than a coin would: the
    # policy is pleasing the judge, not the users (judge drift).
    min_judge_thumbs_agreement: float | None = 0.5
    # Nats per token (TRL's k3 estimate of KL to the reference, the base with the
    # adapter off). Runs that improve without breaking the base's fluency stay well
    # below this; past it each token's distribution is far from anything the base
    # would say, where rewards are most often being gamed. Training only.
    max_kl: float | None = 0.5
    # With fewer answers per side, one unusual answer moves a mean past the limits above.
    min_samples: int = 10


@dataclass
class Trip:
    """A monitor that crossed its limit, and what to tell a person about it."""

    monitor: str  # the figure's name: mean_length, distinct_2, kl, ...
    value: float  # the figure (or its change) that crossed the limit
    limit: float
    message: str  # e.g. "mean_length drifted +83% against control (limit 50%)"
    step: int | None = None  # the optimizer step, for a trip during training

    def to_dict(self) -> dict[str, Any]:
        """The trip as plain data (for JSON and the API)."""
        return dataclasses.asdict(self)


def _words(text: str) -> list[str]:
    return text.lower().split()


def answer_figures(samples: Sequence[AnswerSample]) -> dict[str, float | None]:
    """Figures the monitors compare, over ``samples`` (``None`` where nothing to count).

    ``citation_validity`` is counted over answers that do not decline (as the
    evaluation counts it), so a rise in declining is not counted twice.
    ``judge_thumbs_agreement`` needs :data:`MIN_AGREEMENT_PAIRS` samples with both a
    judge score and a rating.
    """
    figures: dict[str, float | None] = {
        "n": len(samples),
        "mean_length": None,
        "distinct_2": None,
        "declining_share": None,
        "citation_validity": None,
        "judge_thumbs_agreement": None,
    }
    if not samples:
        return figures
    words = [_words(s.answer) for s in samples]
    figures["mean_length"] = sum(len(w) for w in words) / len(samples)
    # Bigrams within each answer, never across two: answers are separate texts.
    bigrams = [pair for w in words for pair in pairwise(w)]
    if bigrams:
        figures["distinct_2"] = len(set(bigrams)) / len(bigrams)
    declined = [says_not_in_documents(s.answer) for s in samples]
    figures["declining_share"] = sum(declined) / len(samples)
    answered = [s for s, d in zip(samples, declined, strict=True) if not d]
    if answered:
        valid = sum(citations_valid(s.answer, s.n_sources) for s in answered)
        figures["citation_validity"] = valid / len(answered)
    pairs = [(s.judge, s.rating) for s in samples if s.judge is not None and s.rating is not None]
    if len(pairs) >= MIN_AGREEMENT_PAIRS:
        agree = sum((judge >= 0.5) == (rating > 0) for judge, rating in pairs)
        figures["judge_thumbs_agreement"] = agree / len(pairs)
    return figures


def _drop(name: str, canary: float, control: float, limit: float, rise: bool) -> Trip | None:
    """A trip when ``canary`` is ``limit`` or more below control (above, when ``rise``)."""
    change = canary - control if rise else control - canary
    if change <= limit:
        return None
    verb = "rose" if rise else "fell"
    return Trip(
        name,
        change,
        limit,
        f"{name} {verb} {change:.2f} against control ({canary:.2f} vs {control:.2f}; "
        f"limit {limit:.2f})",
    )


def compare(
    canary: dict[str, float | None],
    control: dict[str, float | None],
    limits: MonitorLimits,
) -> list[Trip]:
    """The monitors the canary's figures trip against control's (both from :func:`answer_figures`).

    Nothing trips while either side has fewer than ``limits.min_samples`` answers, or for
    a figure either side lacks.
    """
    if min(canary.get("n") or 0, control.get("n") or 0) < limits.min_samples:
        return []
    trips: list[Trip] = []

    def both(name: str) -> tuple[float, float] | None:
        a, b = canary.get(name), control.get(name)
        return None if a is None or b is None else (a, b)

    length = both("mean_length")
    if limits.max_length_drift is not None and length is not None and length[1] > 0:
        drift = (length[0] - length[1]) / length[1]
        if abs(drift) > limits.max_length_drift:
            trips.append(
                Trip(
                    "mean_length",
                    drift,
                    limits.max_length_drift,
                    f"mean_length drifted {drift:+.0%} against control "
                    f"({length[0]:.1f} vs {length[1]:.1f} words; "
                    f"limit {limits.max_length_drift:.0%})",
                )
            )
    checks = (
        ("distinct_2", limits.max_distinct_2_drop, False),
        ("declining_share", limits.max_declining_rise, True),
        ("citation_validity", limits.max_citation_validity_drop, False),
    )
    for name, limit, rise in checks:
        values = both(name)
        if limit is not None and values is not None:
            trip = _drop(name, values[0], values[1], limit, rise)
            if trip is not None:
                trips.append(trip)
    # Agreement is the canary's own: control's judge and users may disagree for reasons
    # the canary did not cause, but a canary below a coin flip is pleasing the judge.
    agreement = canary.get("judge_thumbs_agreement")
    floor = limits.min_judge_thumbs_agreement
    if floor is not None and agreement is not None and agreement < floor:
        trips.append(
            Trip(
                "judge_thumbs_agreement",
                agreement,
                floor,
                f"judge and thumbs agree on {agreement:.0%} of the canary's answers "
                f"(limit {floor:.0%})",
            )
        )
    return trips
