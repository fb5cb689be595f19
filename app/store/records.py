"""The shapes a turn's parts take on their way from the agent to the store and the client.

One :class:`TurnRecord` is built by the agent's store node and used as it is by
``save_turn``, the stream, metrics and the answer collector. Chunks, memories and
sources are ``TypedDict`` s: typed for readers and tools, and still plain JSON-ready dicts
for the checkpointer and the JSON columns they are written to.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

# How an answer cites source n: "[n]". The agent maps these to sources and the trainer's
# rewards check them, so both read this one pattern.
CITATION = re.compile(r"\[(\d{1,3})\]")
# Phrases an answer uses to say honestly that the sources lack the answer; the agent's own
# "not found" reply, the trainer's rewards and the evaluation all read this one pattern.
NOT_IN_DOCUMENTS = re.compile(
    r"not in (the|your|these) (documents?|sources?)|"
    r"(documents?|sources?) (do|does) not (contain|say|mention)|"
    r"could not find (anything|that|this|the answer)|"
    r"no information (about|on)",
    re.IGNORECASE,
)


def says_not_in_documents(text: str) -> bool:
    """Whether ``text`` says the documents do not hold the answer."""
    return NOT_IN_DOCUMENTS.search(text) is not None


class ChunkData(TypedDict, total=False):
    """A retrieved passage as the prompt numbered it (the retriever's ``SearchResult``)."""

    chunk_id: str
    document_id: str
    text: str
    score: float
    title: str
    page: int | None
    heading: str | None
    position: int
    collection: str
    scores: dict[str, float]


class SourceData(ChunkData, total=False):
    """A passage with its citation ``number``; ``cited`` when the answer cites it.

    ``origin`` says who cited it: ``model`` when the model wrote the marker, ``attached``
    when the agent added it after the fact by matching a sentence to this passage.
    """

    number: int
    cited: bool
    origin: str


class MemoryData(TypedDict, total=False):
    """A remembered fact about the user, as recalled for a turn."""

    id: str
    text: str
    score: float | None
    created_at: str | None
    updated_at: str | None
    thread_id: str | None


@dataclass
class TurnRecord:
    """A finished turn, whole: what the store writes and the client is told."""

    id: str
    thread_id: str
    user_id: str
    question: str
    answer: str
    model: str
    collection: str | None = None
    standalone_query: str = ""
    route: str = "retrieve"
    messages: list[dict[str, str]] = field(default_factory=list)
    """The exact messages sent to the model."""
    retrieved: list[ChunkData] = field(default_factory=list)
    """The passages in the prompt, numbered from 1 in this order."""
    memories: list[MemoryData] = field(default_factory=list)
    sources: list[SourceData] = field(default_factory=list)
    """The passages the answer cites, with their numbers."""
    adapter_version: str | None = None
    arm: str | None = None
    """``canary`` or ``control`` while a canary is on trial."""
    sampling: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None

    def columns(self) -> dict[str, Any]:
        """The record as ``Turn`` column values."""
        return asdict(self)


def numbered_sources(retrieved: list[ChunkData], cited: list[SourceData]) -> list[SourceData]:
    """Every passage the answer was given, numbered as in the prompt, marked if cited."""
    origins = {s.get("number"): s.get("origin") for s in cited}
    numbered = []
    for n, chunk in enumerate(retrieved, start=1):
        source = SourceData(**chunk, number=n, cited=n in origins)
        if origins.get(n):
            source["origin"] = str(origins[n])
        numbered.append(source)
    return numbered
