"""Checks on an answer's text that the evaluation and the trainer's gate share.

Token recall and F1 follow SQuAD's normalisation (lower case, no punctuation or
articles) and take the best reference. An answer "ends in repetition" when its tail
loops: few distinct words in the last 40, or a 6-word run said 3 times.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from app.store.records import CITATION

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def tokens(text: str) -> list[str]:
    """SQuAD-normalised words of ``text``."""
    text = CITATION.sub(" ", text.lower()).translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def recall_f1(answer: str, references: list[str]) -> tuple[float, float]:
    """Best (token recall, token F1) of ``answer`` over ``references``; (0, 0) without any."""
    said = Counter(tokens(answer))
    best = (0.0, 0.0)
    for reference in references:
        wanted = Counter(tokens(reference))
        common = sum((said & wanted).values())
        if not common:
            continue
        recall = common / sum(wanted.values())
        precision = common / sum(said.values())
        best = max(best, (recall, 2 * recall * precision / (recall + precision)))
    return best


def ends_in_repetition(answer: str) -> bool:
    """Whether the answer's tail loops instead of ending."""
    words = tokens(answer)
    tail = words[-40:]
    if len(tail) >= 20 and len(set(tail)) < len(tail) / 2:
        return True
    grams = Counter(tuple(words[i : i + 6]) for i in range(max(0, len(words) - 5)))
    return bool(grams) and max(grams.values()) >= 3


def citations_valid(answer: str, source_count: int) -> bool:
    """At least one citation, and every one names a source the answer was given."""
    cited = [int(n) for n in CITATION.findall(answer)]
    return bool(cited) and all(1 <= n <= source_count for n in cited)
