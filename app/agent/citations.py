"""Citations: ``[n]`` markers in an answer, mapped to the sources they point at."""

from __future__ import annotations

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
        SourceData(**chunks[n - 1], number=n)
        for n in cited_numbers(answer)
        if 1 <= n <= len(chunks)
    ]


def drop_dangling(answer: str, count: int) -> str:
    """``answer`` without citation markers that point past the ``count`` sources."""
    return CITATION.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= count else "", answer)
