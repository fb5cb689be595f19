"""Stopping an answer that has started to loop.

A small model sometimes says the same phrase again and again until ``max_tokens``: the
user waits for the whole loop and reads it. The frequency penalty (settings) makes loops
rarer; this ends the rest. Once a run of ``RUN`` words has been said ``TIMES`` times, the
agent stops reading the stream (closing it stops the server's generation too) and keeps
the answer up to the last sentence before the run was said the second time. Numbers
count as one word, so a list that only counts on ("1. The Flash [1] 2. The Flash [1]
3. ...") is a loop too.
"""

from __future__ import annotations

import re
import string

RUN = 6
TIMES = 3
_WORD = re.compile(r"\S+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"\d+")
# A sentence ends at . ! ? (and the citations after it), but not a list marker's "1.".
_SENTENCE_END = re.compile(
    r"(?<!^\d)(?<!^\d\d)(?<!\s\d)(?<!\s\d\d)"  # not "1." opening a list item
    r"[.!?。！？](?:\s*\[\d{1,3}\])*(?=\s|$)"
)


def _words(text: str) -> list[tuple[str, int]]:
    """Each word of ``text`` normalised (lower case, no punctuation), with its offset."""
    found = []
    for match in _WORD.finditer(text):
        word = _NUMBER.sub("0", match.group().lower().translate(_PUNCTUATION))
        if word:
            found.append((word, match.start()))
    return found


def loop_start(text: str) -> int | None:
    """Offset where a looping run is said for the second time, or None when none loops."""
    words = _words(text)
    seen: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(words) - RUN + 1):
        run = tuple(word for word, _ in words[i : i + RUN])
        starts = seen.setdefault(run, [])
        # Overlapping sayings ("a a a a a a a") count too: a one-word loop is still a loop.
        starts.append(words[i][1])
        if len(starts) >= TIMES:
            return starts[1]
    return None


def cut_loop(text: str, start: int) -> str:
    """``text`` before ``start``, ended at its last full sentence when it has one."""
    head = text[:start]
    ends = list(_SENTENCE_END.finditer(head))
    if ends:
        return head[: ends[-1].end()].rstrip()
    return head.rstrip()
