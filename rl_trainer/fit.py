"""Fitting training rows into the recipe's ``max_length`` by shortening the sources only.

TRL drops a DPO pair whose prompt alone fills ``max_length`` and cuts the completion of
the rest, silently; RAG prompts are 950-1,500 tokens, so a short ``max_length`` trained on
almost nothing (14 pairs gave 2). So before TRL sees a row, it is measured with the
policy's tokenizer and chat template the way TRL tokenizes it, and made to fit by
dropping the lowest-ranked (trailing) sources and cutting the text of the last one kept.
The question, the thread's history, the memories, the instruction and the answers are
never cut, and the sources that remain keep their numbers, so citations stay valid. A row
that does not fit even with no sources is dropped, and every outcome is counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from app.store.prompt_data import UserTurn, parse_user_turn

logger = logging.getLogger(__name__)

NO_ROOM = "too long even without sources"
NO_SOURCES = "too long, with no sources to shorten"
# A source cut below this many tokens tells the model nothing; it is left out whole.
MIN_PARTIAL_TOKENS = 16
CUT_MARK = " …"

Messages = list[dict[str, Any]]


@dataclass
class FitReport:
    """What fitting did to a snapshot's training rows."""

    max_length: int
    given: int = 0
    kept: int = 0
    shortened: int = 0  # kept, with some source text removed
    sources_removed: int = 0  # whole sources left out of kept rows
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    dropped_turn_ids: list[str] = field(default_factory=list)
    fewest_tokens_needed: int | None = None  # by the smallest dropped row, sources removed
    longest_kept: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest, the report and ``fit.json``."""
        return asdict(self)

    def text(self, unit: str = "rows") -> str:
        """One line for logs and the run report."""
        line = (
            f"trained on {self.kept} of {self.given} {unit} (max_length {self.max_length}; "
            f"{self.shortened} with sources shortened to fit)"
        )
        if self.dropped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.dropped.items()))
            line += f"; dropped {self.given - self.kept} ({reasons})"
        return line


def token_count(tokenizer: Any, messages: Messages, *, generation_prompt: bool) -> int:
    """Tokens of ``messages`` under the tokenizer's chat template, as TRL tokenizes them."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
    )
    return len(out["input_ids"])


def row_measure(tokenizer: Any, algo: str, completion_tokens: int) -> Callable[[dict], int]:
    """Length of a row as training sees it.

    DPO: the longer of prompt + chosen and prompt + rejected (TRL cuts at ``max_length``).
    GRPO: the prompt with the generation prompt plus the longest completion sampled.
    """

    def measure(row: dict[str, Any]) -> int:
        if algo == "dpo":
            return max(
                token_count(tokenizer, row["prompt"] + row[key], generation_prompt=False)
                for key in ("chosen", "rejected")
            )
        return token_count(tokenizer, row["prompt"], generation_prompt=True) + completion_tokens

    return measure


def _last_user(prompt: Messages) -> int | None:
    users = [i for i, m in enumerate(prompt) if m.get("role") == "user"]
    return users[-1] if users else None


def _with_sources(
    row: dict[str, Any], at: int, turn: UserTurn, sources: list[str]
) -> dict[str, Any]:
    prompt = list(row["prompt"])
    content = UserTurn(turn.question, sources, turn.memories).render()
    prompt[at] = {**prompt[at], "content": content}
    out = {**row, "prompt": prompt}
    if "num_sources" in row:  # GRPO's citation reward checks [n] against what is left
        out["num_sources"] = len(sources)
    return out


def _cut_source(
    tokenizer: Any, source: str, fits: Callable[[str], bool], min_tokens: int
) -> str | None:
    """The longest head of ``source``'s text that still fits; None below ``min_tokens``."""
    head, _, body = source.partition("\n")
    ids = tokenizer(body, add_special_tokens=False)["input_ids"]

    def cut(n: int) -> str:
        return f"{head}\n{tokenizer.decode(ids[:n])}{CUT_MARK}"

    if len(ids) <= min_tokens or not fits(cut(min_tokens)):
        return None
    lo, hi = min_tokens, len(ids) - 1  # the whole source is known not to fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(cut(mid)):
            lo = mid
        else:
            hi = mid - 1
    return cut(lo)


@dataclass
class Fitted:
    """One row's outcome: the row that fits (None: dropped, with the reason) and its length.

    A dropped row's length is the fewest tokens it needs (with its sources removed).
    """

    row: dict[str, Any] | None
    length: int
    reason: str | None = None
    sources_removed: int = 0  # whole sources left out; a cut one still counts as kept


def fit_row(
    row: dict[str, Any], tokenizer: Any, measure: Callable[[dict], int], budget: int
) -> Fitted:
    """``row`` as it fits ``budget`` tokens: whole, with fewer sources, or not at all."""
    length = measure(row)
    if length <= budget:
        return Fitted(row, length)
    at = _last_user(row["prompt"])
    turn = parse_user_turn(str(row["prompt"][at]["content"])) if at is not None else None
    if at is None or turn is None or not turn.sources:
        return Fitted(None, length, NO_SOURCES)
    bare = measure(_with_sources(row, at, turn, []))
    if bare > budget:
        return Fitted(None, bare, NO_ROOM)
    sources = turn.sources

    def fits(kept: list[str]) -> bool:
        return measure(_with_sources(row, at, turn, kept)) <= budget

    lo, hi = 0, len(sources) - 1  # the most whole sources that fit (all of them do not)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(sources[:mid]):
            lo = mid
        else:
            hi = mid - 1
    kept = sources[:lo]
    partial = _cut_source(tokenizer, sources[lo], lambda s: fits([*kept, s]), MIN_PARTIAL_TOKENS)
    if partial is not None:
        kept = [*kept, partial]
    fitted = _with_sources(row, at, turn, kept)
    return Fitted(fitted, measure(fitted), sources_removed=len(sources) - len(kept))


def fit_rows(
    rows: list[dict[str, Any]],
    tokenizer: Any,
    *,
    algo: str,
    max_length: int,
    completion_tokens: int = 0,
) -> tuple[list[dict[str, Any]], FitReport]:
    """The rows that fit ``max_length`` (sources shortened where needed) and the counts."""
    measure = row_measure(tokenizer, algo, completion_tokens)
    report = FitReport(max_length=max_length, given=len(rows))
    kept: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for row in tqdm(rows, desc=f"fitting rows to {max_length} tokens", unit="row"):
        out = fit_row(row, tokenizer, measure, max_length)
        if out.row is None:
            dropped[str(out.reason)] += 1
            report.dropped_turn_ids += [t for t in row.get("turn_ids", [row.get("turn_id")]) if t]
            fewest = report.fewest_tokens_needed
            report.fewest_tokens_needed = min(fewest or out.length, out.length)
            continue
        if out.row is not row:
            report.shortened += 1
            report.sources_removed += out.sources_removed
        report.longest_kept = max(report.longest_kept, out.length)
        kept.append(out.row)
    report.kept, report.dropped = len(kept), dict(dropped)
    return kept, report


def nothing_left(report: FitReport, unit: str, model: str) -> str:
    """The error when no row fits: what happened and what to change."""
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(report.dropped.items()))
    need = report.fewest_tokens_needed
    return (
        f"none of the {report.given} training {unit} fits max_length={report.max_length} "
        f"tokens with {model}'s chat template, even with every source removed ({reasons}). "
        f"Raise max_length to at least {need} (--set max_length={need}; the model's context "
        "window must hold it), or leave the longest questions and answers out"
    )
