"""The evaluation gate: does the candidate beat what serves now, on turns it never saw?

Both the candidate and the serving adapter (or the base model) answer every held-out
prompt through the model server at temperature 0, and the judge compares each pair in
both orders. Checks that need no judge are measured on the same answers: token F1
against the users' corrected answers, citation validity (of the answers that do not
decline), declining questions the users showed the documents cannot answer, and declining
ones they showed they can, and grounding (the share of an answer's content words found
in its sources). A judge can be fooled by a confident answer; these checks cannot, so
none of them may get worse. Grounding is the one figure users' feedback cannot steer: an
adapter trained on poisoned "corrections" (another question's answer) loses it.

When the judge is the policy model itself (no stronger ``JUDGE_URL``/``JUDGE_MODEL``), a
model grading its own answers carries little weight: the candidate then passes on the
judge's win rate *or* on a judge-free figure that improved, and a judge that cannot parse
or prefers the baseline cannot block a candidate those figures show is better. With a
separate judge, its win rate must reach the threshold as before.

A figure counts as improved only when the candidate does better than the baseline on at
least ``min_net_rows`` more held-out questions than it does worse (a paired count, as a
sign test reads it): on a handful of rows one lucky answer moves a mean a long way.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from app.agent.words import grounding
from app.store.answer_checks import recall_f1
from app.store.records import says_not_in_documents
from backend.client import ModelClient
from rl_trainer.judge import Judge, parse_rate
from rl_trainer.rewards import citation_validity, honest_not_in_documents

logger = logging.getLogger(__name__)
INFO_KEYS = ("num_sources", "answerable", "answer")
# Token F1 moves by a few hundredths between greedy answers that mean the same; a drop
# or gain below this is noise on held-out sets of tens of turns.
F1_TOLERANCE = 0.02
# Per question, an F1 change below this is the same answer reworded.
ROW_F1_TOLERANCE = 0.05
# Grounding: the share of an answer's content words found in its sources. SmolLM2's answers
# to ClapNQ score 0.55 on average; two runs over the same questions differ by sd 0.19 per
# answer, and the means of 10 answers by at most 0.14 in 95% of draws. A drop beyond this
# is an adapter saying what its documents do not hold.
GROUNDING_TOLERANCE = 0.15
_Figure = dict[str, float | None]


@dataclass
class GateResult:
    """The gate's verdict and the figures behind it (each figure per served model)."""

    passed: bool
    candidate: str
    baseline: str
    threshold: float
    prompts: int = 0
    judged: int = 0
    win_rate: float | None = None
    judge_is_policy: bool = False
    judge_compared: bool = True  # False: the policy judge was not asked (gate_policy_judge)
    judge_parse_rate: float | None = None  # share of the judge's replies parsed here
    judge_thumbs: dict[str, Any] = field(default_factory=dict)  # agreement with users
    citation_validity: _Figure = field(default_factory=dict)
    not_in_documents: _Figure = field(default_factory=dict)
    corrected_f1: _Figure = field(default_factory=dict)  # vs users' corrected answers
    declined_unanswerable: _Figure = field(default_factory=dict)
    declined_answerable: _Figure = field(default_factory=dict)  # wrongly declined
    grounding: _Figure = field(default_factory=dict)  # answers' words found in their sources
    counts: dict[str, int] = field(default_factory=dict)  # rows behind each figure
    min_net_rows: int = 1  # an improvement must hold on this many more rows than it fails
    net_rows: dict[str, int] = field(default_factory=dict)  # rows better minus rows worse
    improved: list[str] = field(default_factory=list)  # judge-free figures the candidate raised
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        return asdict(self)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _worse(new: float | None, old: float | None, tolerance: float = 1e-9) -> bool:
    return new is not None and old is not None and new < old - tolerance


def judge_free(
    result: GateResult, rows: list[dict[str, Any]], answers: dict[str, list[str]]
) -> None:
    """Fill the figures that need no judge from both models' answers to ``rows``."""
    columns = {k: [r.get(k) for r in rows] for k in INFO_KEYS}
    corrected = [i for i, r in enumerate(rows) if r.get("corrected")]
    unanswerable = [i for i, r in enumerate(rows) if r.get("answerable") is False]
    answerable = [i for i, r in enumerate(rows) if r.get("answerable") is True]
    result.counts = {
        "corrected": len(corrected),
        "unanswerable": len(unanswerable),
        "answerable": len(answerable),
    }
    per_row: dict[str, dict[str, list[float | None]]] = {}
    for model, said in answers.items():
        declined = [float(says_not_in_documents(text)) for text in said]
        # A decline rightly cites nothing: citations are measured on answers given.
        cites = citation_validity(said, **columns)
        values: dict[str, list[float | None]] = {
            "corrected_f1": [recall_f1(said[i], [rows[i]["corrected"]])[1] for i in corrected],
            "citation_validity": [None if no else c for c, no in zip(cites, declined, strict=True)],
            "not_in_documents": list(honest_not_in_documents(said, **columns)),
            "declined_unanswerable": [declined[i] for i in unanswerable],
            "declined_answerable": [declined[i] for i in answerable],
        }
        for name, row_values in values.items():
            getattr(result, name)[model] = _mean(row_values)
        per_row[model] = values
        result.grounding[model] = _mean(
            [
                grounding(text, row["passages"])
                for text, row, no in zip(said, rows, declined, strict=True)
                if row.get("passages") and not no
            ]
        )
    new, old = per_row.get(result.candidate), per_row.get(result.baseline)
    if new is not None and old is not None:
        result.net_rows = {name: _net_rows(name, new[name], old[name]) for name in new}


def _net_rows(name: str, new: list[float | None], old: list[float | None]) -> int:
    """Rows where the candidate does better, minus rows where it does worse."""
    tolerance = ROW_F1_TOLERANCE if name == "corrected_f1" else 1e-9
    sign = -1.0 if name == "declined_answerable" else 1.0  # declining those is worse
    net = 0
    for a, b in zip(new, old, strict=True):
        if a is None or b is None:
            continue
        diff = sign * (a - b)
        net += (diff > tolerance) - (diff < -tolerance)
    return net


def _lower_is_better(figure: _Figure) -> _Figure:
    return {model: None if v is None else -v for model, v in figure.items()}


def decide(result: GateResult) -> None:
    """Set ``result.reasons`` (empty: pass) and ``result.passed`` from its figures."""
    new, old = result.candidate, result.baseline
    checks = {
        "overlap with users' corrected answers (token F1)": (
            result.corrected_f1,
            F1_TOLERANCE,
            "corrected_f1",
        ),
        "citation validity": (result.citation_validity, 1e-9, "citation_validity"),
        'honest "not in the documents" rate': (result.not_in_documents, 1e-9, "not_in_documents"),
        "declining questions the documents cannot answer": (
            result.declined_unanswerable,
            1e-9,
            "declined_unanswerable",
        ),
        "not declining questions the documents answer": (
            _lower_is_better(result.declined_answerable),
            1e-9,
            "declined_answerable",
        ),
    }
    # A guard only: copying the sources raises grounding, so a rise earns no pass.
    grounding = result.grounding
    if _worse(grounding.get(new), grounding.get(old), GROUNDING_TOLERANCE):
        result.reasons.append(
            f"answers' grounding in their sources got worse: {grounding[new]:.2f} < "
            f"{grounding[old]:.2f} (content words found in the sources)"
        )
    improved, too_few = [], []
    for name, (figure, tolerance, key) in checks.items():
        if _worse(figure.get(new), figure.get(old), tolerance):
            result.reasons.append(f"{name} got worse: {figure[new]:.2f} < {figure[old]:.2f}")
        elif _worse(figure.get(old), figure.get(new), tolerance):
            net = result.net_rows.get(key, 0)
            if net >= result.min_net_rows:
                improved.append(name)
            else:
                too_few.append(f"{name} (net {net})")
    result.improved = improved
    won = result.win_rate is not None and result.win_rate >= result.threshold
    if result.judge_is_policy:
        if not won and not improved:
            win = "n/a" if result.win_rate is None else f"{result.win_rate:.2f}"
            few = (
                f" (better on too few questions, fewer than {result.min_net_rows} net: "
                + ", ".join(too_few)
                + ")"
                if too_few
                else ""
            )
            judged = (
                f"gave win rate {win}, below {result.threshold:.2f}"
                if result.judge_compared
                else "was not asked to compare (gate_policy_judge is off)"
            )
            result.reasons.append(
                f"no judge-free figure improved{few}, and the judge (the policy model itself) "
                + judged
            )
    elif result.win_rate is None:
        result.reasons.append("the judge could not compare any pair")
    elif not won:
        result.reasons.append(f"win rate {result.win_rate:.2f} below {result.threshold:.2f}")
    result.passed = not result.reasons


def gate(
    client: ModelClient,
    judge: Judge | None,
    heldout: list[dict[str, Any]],
    *,
    candidate: str,
    baseline: str,
    threshold: float = 0.55,
    max_tokens: int = 256,
    limit: int | None = None,
    judge_is_policy: bool = False,
    min_net_rows: int = 1,
) -> GateResult:
    """Answer ``heldout`` with ``candidate`` and ``baseline`` (served names) and compare.

    ``judge`` None (only with ``judge_is_policy``): no pairwise comparison is asked; the
    judge-free checks decide alone.
    """
    if judge is None and not judge_is_policy:
        raise ValueError("a judge separate from the policy must compare the answers")
    rows = heldout[:limit] if limit is not None else heldout
    result = GateResult(
        False,
        candidate,
        baseline,
        threshold,
        prompts=len(rows),
        judge_is_policy=judge_is_policy,
        judge_compared=judge is not None,
        min_net_rows=min_net_rows,
    )
    if not rows:
        result.reasons.append("no held-out prompts: collect more rated turns before gating")
        return result
    wins: list[float] = []
    answers: dict[str, list[str]] = {candidate: [], baseline: []}
    asked, failed = (judge.asked, judge.failures) if judge is not None else (0, 0)
    for row in tqdm(rows, desc=f"gate {candidate} vs {baseline}", unit="prompt"):
        for model in (candidate, baseline):
            reply = client.chat(
                row["prompt"], model=model, temperature=0.0, max_tokens=max_tokens, seed=0
            )
            answers[model].append(reply.text)
        if judge is None:
            continue
        info = {k: row.get(k) for k in INFO_KEYS}
        preference = judge.compare(
            row["prompt"], answers[candidate][-1], answers[baseline][-1], info
        )
        if preference is not None:
            wins.append(preference)
    result.judged = len(wins)
    result.win_rate = sum(wins) / len(wins) if wins else None
    result.judge_parse_rate = parse_rate(judge, asked, failed) if judge is not None else None
    judge_free(result, rows, answers)
    decide(result)
    logger.info(
        "gate %s vs %s: win rate %s over %d judged pairs -> %s",
        candidate,
        baseline,
        "n/a" if result.win_rate is None else f"{result.win_rate:.2f}",
        result.judged,
        "PASS" if result.passed else "FAIL (" + "; ".join(result.reasons) + ")",
    )
    return result


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def gate_text(g: dict[str, Any]) -> str:
    """The gate's verdict and figures as a person reads them (``GateResult.to_dict()``)."""
    new, old = g["candidate"], g["baseline"]
    verdict = "PASS" if g["passed"] else "FAIL: " + "; ".join(g["reasons"])
    if g["passed"] and g.get("improved"):
        verdict += " (improved: " + ", ".join(g["improved"]) + ")"
    judge = "the policy model itself" if g.get("judge_is_policy") else "separate from the policy"
    if not g.get("judge_compared", True):
        judge += ", not asked to compare"
    thumbs = g.get("judge_thumbs") or {}
    lines = [
        f"gate: {new} vs {old}: win rate {_pct(g['win_rate'])} (threshold "
        f"{g['threshold']:.2f}, {g['judged']}/{g['prompts']} judged) {verdict}",
        f"  judge ({judge}): replies parsed {_pct(g.get('judge_parse_rate'))}, agrees with "
        f"users' thumbs {_pct(thumbs.get('agreement'))} over {thumbs.get('turns', 0)} turns",
    ]
    counts = g.get("counts") or {}
    figures = (
        ("corrected_f1", "F1 vs corrected answers", "corrected"),
        ("citation_validity", "valid citations", None),
        ("declined_unanswerable", "declined unanswerable", "unanswerable"),
        ("declined_answerable", "wrongly declined", "answerable"),
        ("grounding", "grounding", None),
    )
    net_rows = g.get("net_rows") or {}
    parts = []
    for key, label, count in figures:
        figure = g.get(key) or {}
        n = f" (n={counts.get(count, 0)})" if count else ""
        net = f" [net {net_rows[key]:+d} rows]" if key in net_rows else ""
        parts.append(f"{label}{n} {_pct(figure.get(new))} vs {_pct(figure.get(old))}{net}")
    lines.append("  judge-free, candidate vs serving: " + "; ".join(parts))
    return "\n".join(lines)
