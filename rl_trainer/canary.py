"""Deciding a canary trial: promote, roll back, or keep collecting, from users' own ratings.

The test: a one-sided Fisher exact test of "the canary's thumbs-down rate is higher than
control's" on the two arms' rated turns (exact at the small counts a canary sees, where
a z-test's normal approximation is poor).

- **Roll back** when that test is significant (p < alpha); when the canary's error rate
  is significantly higher than control's by more than ``max_error_rise``; when a
  reward-hacking monitor trips on canary against control answers; or when the canary
  has ``max_rated`` rated turns and still is not shown to be as good.
- **Promote** once the canary has ``min_rated`` rated turns (control as many), the test
  is not significant, and its observed thumbs-down rate is at most control's plus a
  non-inferiority ``margin``.
- Otherwise **wait**.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy.stats import fisher_exact

from app.store.loop import CANARY, CONTROL, ArmTurn, count
from rl_trainer.monitors import AnswerSample, MonitorLimits, answer_figures, compare

Action = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True)
class CanaryPolicy:
    """When a trial is decided (defaults documented in the settings: CANARY_*)."""

    min_rated: int = 20
    max_rated: int = 100
    alpha: float = 0.05
    margin: float = 0.05
    max_error_rise: float = 0.05
    min_turns_for_errors: int = 10


@dataclass
class Verdict:
    """What to do with the canary, why, and the figures it was decided on."""

    action: Action
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    tripped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (stored with the loop's event and in the version's manifest)."""
        return asdict(self)


def worse_p(bad_a: int, n_a: int, bad_b: int, n_b: int) -> float:
    """One-sided Fisher exact p of "arm a's bad rate is higher than arm b's"."""
    if n_a == 0 or n_b == 0:
        return 1.0
    table = [[bad_a, n_a - bad_a], [bad_b, n_b - bad_b]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def samples(turns: list[ArmTurn], arm: str) -> list[AnswerSample]:
    """The arm's answered turns, as the monitors read them."""
    return [
        AnswerSample(answer=t.answer, n_sources=t.n_sources, rating=t.rating, judge=t.judge)
        for t in turns
        if t.arm == arm and not t.error
    ]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def decide(turns: list[ArmTurn], policy: CanaryPolicy, limits: MonitorLimits) -> Verdict:
    """The trial's verdict on its turns so far (see the module's rules)."""
    canary, control = count(turns, CANARY), count(turns, CONTROL)
    p_down = worse_p(canary.down, canary.rated, control.down, control.rated)
    p_err = worse_p(canary.errors, canary.turns, control.errors, control.turns)
    monitors = {
        CANARY: answer_figures(samples(turns, CANARY)),
        CONTROL: answer_figures(samples(turns, CONTROL)),
    }
    figures: dict[str, Any] = {
        CANARY: asdict(canary) | {"down_rate": canary.down_rate, "error_rate": canary.error_rate},
        CONTROL: asdict(control)
        | {"down_rate": control.down_rate, "error_rate": control.error_rate},
        "p_worse_ratings": round(p_down, 4),
        "p_worse_errors": round(p_err, 4),
        "monitors": monitors,
    }
    rates = f"thumbs down {_pct(canary.down_rate)} vs control {_pct(control.down_rate)}"
    trips = compare(monitors[CANARY], monitors[CONTROL], limits)
    if trips:
        reason = "; ".join(t.message for t in trips)
        return Verdict(
            "rollback", f"monitor tripped: {reason}", figures, [t.monitor for t in trips]
        )
    error_rise = (canary.error_rate or 0.0) - (control.error_rate or 0.0)
    if (
        canary.turns >= policy.min_turns_for_errors
        and p_err < policy.alpha
        and error_rise > policy.max_error_rise
    ):
        return Verdict(
            "rollback",
            f"errors {_pct(canary.error_rate)} vs control {_pct(control.error_rate)} "
            f"(Fisher p={p_err:.3g} < {policy.alpha})",
            figures,
        )
    if p_down < policy.alpha:
        return Verdict(
            "rollback",
            f"users rate the canary worse: {rates} (one-sided Fisher exact p={p_down:.3g} "
            f"< {policy.alpha})",
            figures,
        )
    if canary.rated < policy.min_rated or control.rated < policy.min_rated:
        return Verdict(
            "wait",
            f"{canary.rated} canary and {control.rated} control turns rated; "
            f"{policy.min_rated} each are needed",
            figures,
        )
    if (canary.down_rate or 0.0) <= (control.down_rate or 0.0) + policy.margin:
        return Verdict(
            "promote",
            f"not worse than control: {rates} (p={p_down:.3g}, margin {policy.margin:.0%})",
            figures,
        )
    if canary.rated >= policy.max_rated:
        return Verdict(
            "rollback",
            f"not shown as good as control after {canary.rated} rated turns: {rates}",
            figures,
        )
    return Verdict("wait", f"undecided so far: {rates} (p={p_down:.3g})", figures)
