"""What the retriever hands back: ingest outcomes, stored documents, search hits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["bm25", "dense", "hybrid", "hybrid+rerank"]
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid", "hybrid+rerank")
Status = Literal["ingested", "unchanged", "replaced"]


@dataclass(slots=True)
class IngestResult:
    """What happened to one document."""

    document_id: str
    title: str
    chunks: int
    status: Status
    content_hash: str
    source: str = ""
    collection: str = "default"


@dataclass(slots=True)
class DocumentInfo:
    """A stored document as its owner sees it."""

    document_id: str
    title: str
    source: str
    collection: str
    owner: str
    chunks: int
    content_hash: str
    ingested_at: str


@dataclass(slots=True)
class SearchResult:
    """One retrieved chunk with where it came from."""

    chunk_id: str
    document_id: str
    text: str
    score: float
    title: str
    page: int | None
    heading: str | None
    position: int
    collection: str = "default"
    source: str = ""
    scores: dict[str, float] = field(default_factory=dict)


def default_document_id(collection: str, source: str) -> str:
    """The id a document gets when none is given: stable per collection and source name."""
    return "doc_" + hashlib.sha256(f"{collection}\x1f{source}".encode()).hexdigest()[:20]
