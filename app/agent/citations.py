"""Citations: ``[n]`` markers in an answer, mapped to the sources they point at."""

from __future__ import annotations

import re

from app.agent.words import content_words, coverage
from app.store.records import CITATION, ChunkData, SourceData


def cited_numbers(answer: str) -> list[int]:
    """The citation numbers in ``answer``, in order of first appearance."""
    seen: dict[int, None] = {}
    for match in CITATION.finditer(answer):
        seen.setdefault(int(match.group(1)), None)
    return list(seen)


def cited_sources(answer: str, chunks: list[ChunkData]) -> list[SourceData]:
    """The chunks ``answer`` cites, each with its ``number``; citations to nothing dropped."""
    return [
        SourceData(**chunks[n - 1], number=n, origin="model")
        for n in cited_numbers(answer)
        if 1 <= n <= len(chunks)
    ]


def drop_dangling(answer: str, count: int) -> str:
    """``answer`` without citation markers that point past the ``count`` sources."""
    return CITATION.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= count else "", answer)


# A sentence cites the passage holding at least this share of its content words; below
# it the sentence is the model's own (or a guess) and gets no citation. As RAGFlow's
# insert_citations does, the bar is lowered step by step (down to 0.3) only while no
# sentence of the answer reaches it, so a loosely worded answer still names its source.
SUPPORT_LEVELS = (0.5, 0.4, 0.3)
# A sentence with fewer content words ("Yes.", "Paris.") claims too little to match.
MIN_CLAIM_WORDS = 2
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")
_TRAILING = re.compile(r"[\s.!?。！？:;,]*$")


def attach_citations(answer: str, chunks: list[ChunkData]) -> tuple[str, list[SourceData]]:
    """Cite after the fact: each sentence gets ``[n]`` of the passage that supports it best.

    For answers whose model wrote no valid marker (small models rarely do). A sentence is
    matched on content-word overlap, as RAGFlow's ``insert_citations`` matches on token
    and embedding similarity; sentences no passage supports stay uncited, so an attached
    citation always points at text that shares most of what the sentence says.
    """
    sentences = [s for s in _SENTENCE_END.split(answer) if s.strip()]
    best = [_best_support(sentence, chunks) for sentence in sentences]
    level = next((bar for bar in SUPPORT_LEVELS if any(share >= bar for _, share in best)), None)
    if level is None:
        return answer, []
    cited: dict[int, None] = {}
    pieces, rest = [], answer
    for sentence, (number, share) in zip(sentences, best, strict=True):
        at = rest.find(sentence)
        if at < 0:
            continue
        end = at + len(sentence)
        if number is not None and share >= level:
            body = _TRAILING.sub("", sentence)
            tail = sentence[len(body) :]
            pieces.append(rest[:at] + f"{body} [{number}]{tail}")
            cited.setdefault(number, None)
        else:
            pieces.append(rest[:end])
        rest = rest[end:]
    text = "".join(pieces) + rest
    sources = [SourceData(**chunks[n - 1], number=n, origin="attached") for n in cited]
    return text, sources


def grounded_claims(answer: str) -> bool:
    """Whether ``answer`` makes a claim a passage could support: a sentence of 2+ content words.

    "Yes." or "Paris." claims too little to match, so finding no support for it says
    nothing; an answer with such sentences only is never declined for lack of support.
    """
    sentences = _SENTENCE_END.split(answer)
    return any(len(content_words(s)) >= MIN_CLAIM_WORDS for s in sentences if s.strip())


def _best_support(sentence: str, chunks: list[ChunkData]) -> tuple[int | None, float]:
    """The passage holding most of the sentence's content words, and that share."""
    words = content_words(sentence)
    if len(words) < MIN_CLAIM_WORDS:
        return None, 0.0
    best, number = 0.0, None
    for n, chunk in enumerate(chunks, start=1):
        share = coverage(words, str(chunk.get("text", "")))
        if share > best:
            best, number = share, n
    return number, best
