"""Stopping an answer that has started to loop.

A small model sometimes says the same phrase again and again until ``max_tokens``: the
user waits for the whole loop and reads it. The frequency penalty (settings) makes loops
rarer; this ends the rest. Once a run of ``RUN`` words has been said ``TIMES`` times, the
agent stops reading the stream (closing it stops the server's generation too) and keeps
the answer up to the last sentence before the run was said the second time. Numbers
count as one word, so a list that only counts on ("1. The Flash [1] 2. The Flash [1]
3. ...") is a loop too.

A loop can also be shorter than that: a whole sentence said twice. The finished answer
keeps the first saying of each sentence (:func:`drop_repeated_sentences`).
"""

from __future__ import annotations

import re
import string

from app.store.answer_checks import tokens

RUN = 6
TIMES = 3
# A repeated sentence of fewer words ("Yes.") may be meant; one this long is a loop.
REPEATED_SENTENCE_WORDS = 3
_WORD = re.compile(r"\S+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"\d+")
# A sentence ends at . ! ? (and the citations after it), but not a list marker's "1.".
_SENTENCE_END = re.compile(
    r"(?<!^\d)(?<!^\d\d)(?<!\s\d)(?<!\s\d\d)"  # not "1." opening a list item
    r"[.!?。！？](?:\s*\[\d{1,3}\])*(?=\s|$)"
)

# Where a sentence or a line ends, with the space after it (kept with the sentence).
_SENTENCE_OR_LINE = re.compile(_SENTENCE_END.pattern + r"\s*|\n+")


class LoopGuard:
    """Watches an answer as it streams in; reads each word once.

    ``add`` returns the offset where a looping run was said the second time, once one
    has been said ``TIMES`` times; the word still being written is read at ``finish``.
    """

    def __init__(self) -> None:
        self.text = ""
        self._words: list[str] = []
        self._offsets: list[int] = []
        self._seen: dict[tuple[str, ...], list[int]] = {}
        self._read = 0  # offset up to which whole words have been read

    def add(self, piece: str, *, final: bool = False) -> int | None:
        """Append ``piece``; the loop's offset when the answer now loops, else None."""
        self.text += piece
        for match in _WORD.finditer(self.text, self._read):
            if match.end() == len(self.text) and not final:
                break  # the word may go on in the next piece
            self._read = match.end()
            word = _NUMBER.sub("0", match.group().lower().translate(_PUNCTUATION))
            if not word:
                continue
            self._words.append(word)
            self._offsets.append(match.start())
            if len(self._words) < RUN:
                continue
            starts = self._seen.setdefault(tuple(self._words[-RUN:]), [])
            # Overlapping sayings ("a a a a a a a") count: a one-word loop is still a loop.
            starts.append(self._offsets[-RUN])
            if len(starts) >= TIMES:
                return starts[1]
        return None


def loop_start(text: str) -> int | None:
    """Offset where a looping run of ``text`` is said for the second time, or None."""
    return LoopGuard().add(text, final=True)


def cut_loop(text: str, start: int) -> str:
    """``text`` before ``start``, ended at its last full sentence when it has one."""
    head = text[:start]
    ends = list(_SENTENCE_END.finditer(head))
    if ends:
        return head[: ends[-1].end()].rstrip()
    return head.rstrip()


def drop_repeated_sentences(text: str) -> str:
    """``text`` without the sentences (or lines) it already said, compared word for word.

    Case, punctuation, articles and citation markers are ignored in the comparison, so
    "It rains [1]." again as "it rains [2]" is a repeat too.
    """
    kept: list[str] = []
    seen: set[tuple[str, ...]] = set()
    start = 0
    for end in [*(m.end() for m in _SENTENCE_OR_LINE.finditer(text)), len(text)]:
        piece = text[start:end]
        start = end
        key = tuple(tokens(piece))
        if len(key) >= REPEATED_SENTENCE_WORDS and key in seen:
            continue
        seen.add(key)
        kept.append(piece)
    return "".join(kept).rstrip()
