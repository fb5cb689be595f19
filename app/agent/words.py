"""Content words: what a text is about, for cheap overlap checks between texts.

The query-rewrite check, the attached citations and the evidence for declining all ask
"do these two texts talk about the same things?". Latin-script words are lower-cased,
stripped of function words and lightly stemmed; runs of CJK characters (which have no
spaces) become their character bigrams, the unit Chinese keyword search matches on.
"""

from __future__ import annotations

import re

from app.store.records import CITATION

WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
# Words that carry no topic: a text sharing only these with another is off-topic.
_FUNCTION_TEXT = (
    "a an the and or but if of to in on at by for with about from as into than then is "
    "are was were be been being do does did have has had can could will would shall "
    "should may might must it its this that these those they them their he she his her "
    "him we us our you your i me my what which who whom whose when where why how there "
    "here not no yes all any some more most much many so very also just too please tell"
)
FUNCTION_WORDS = frozenset(_FUNCTION_TEXT.split())


def content_words(text: str) -> set[str]:
    """Words of ``text`` that carry a topic, lower-cased and lightly stemmed."""
    lowered = text.lower()
    words = {_stem(w) for w in WORD.findall(_CJK.sub(" ", lowered)) if w not in FUNCTION_WORDS}
    for run in _CJK.findall(lowered):
        words.update(run[i : i + 2] for i in range(max(1, len(run) - 1)))
    return words


def _stem(word: str) -> str:
    """Enough stemming to match "boil" with "boiling" and "report" with "reports"."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def coverage(words: set[str], text: str) -> float:
    """The share of ``words`` that ``text`` contains (1.0 when ``words`` is empty)."""
    if not words:
        return 1.0
    return len(words & content_words(text)) / len(words)


def grounding(answer: str, passages: list[str]) -> float | None:
    """Share of the answer's content words its ``passages`` hold (citation marks aside).

    None when the answer has no content words. A cheap check that needs no model: on
    ClapNQ dev a reference answer scores >= 0.83 against its own passages in 95% of
    questions, another question's reference <= 0.30.
    """
    words = content_words(CITATION.sub(" ", answer))
    return coverage(words, "\n".join(passages)) if words else None
