"""Documents in, ranked chunks out.

Parsing, chunking, embedding, the Qdrant collections, hybrid dense + keyword search
with fusion, reranking, and retrieval evaluation.

``Retriever``, ``SearchResult``, ``IngestResult`` and ``DocumentInfo`` are imported lazily
from ``retriever.service``, so ``import retriever`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retriever.service import DocumentInfo, IngestResult, Retriever, SearchResult

__all__ = ["DocumentInfo", "IngestResult", "Retriever", "SearchResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from retriever import service

        return getattr(service, name)
    raise AttributeError(f"module 'retriever' has no attribute {name!r}")
