"""The retriever: documents in, ranked chunks out, per owner and collection.

``Retriever`` is the one object the API and the CLIs hold. It opens the collections,
loads the encoder and, in Qdrant's local mode, the in-memory mirror, then hands writing
to :class:`~retriever.writer.Writer` and searching to :class:`~retriever.search.Searcher`.
Methods are synchronous; the API calls them from a worker thread. Writes are serialised
by a lock; searches run beside them on immutable snapshots.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models

from retriever.chunking import Chunker
from retriever.encoders import get_encoder
from retriever.errors import IngestError, UnparseableFile
from retriever.local_mirror import LocalMirror
from retriever.parsing import ParsedDocument, Section, parse_bytes, parse_file
from retriever.qdrant import (
    documents_collection,
    ensure_collections,
    is_local,
    match,
    speed_up_local_storage,
)
from retriever.search import MODES, Hit, Mode, Searcher, SearchResult
from retriever.settings import M3_PREFIX, RetrieverSettings
from retriever.writer import INDEX_VERSION, IngestResult, Writer, default_document_id

__all__ = [
    "INDEX_VERSION",
    "MODES",
    "DocumentInfo",
    "Hit",
    "IngestResult",
    "Mode",
    "Retriever",
    "SearchResult",
    "default_document_id",
]


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


class Retriever:
    """Ingestion, deletion, listing and search over one Qdrant chunk collection."""

    def __init__(
        self,
        client: QdrantClient,
        settings: RetrieverSettings,
        *,
        native_search: bool | None = None,
    ) -> None:
        """Load the encoder and open (or create) the collections.

        Args:
            client: the process's Qdrant client (see ``retriever.qdrant.open_client``).
            settings: retriever settings.
            native_search: query Qdrant itself rather than the in-process mirror; default:
                only with a Qdrant server (local mode's own search is ~100x slower).

        Raises:
            EmbedderMismatch: the collection was built by another embedding model.
        """
        self.client = client
        self.settings = settings
        self.collection_name = settings.qdrant_collection
        self.encoder = get_encoder(settings)
        lexical = settings.embedding_model.startswith(M3_PREFIX)
        ensure_collections(
            client, self.collection_name, self.encoder.dim, lexical, self.encoder.model_id
        )
        local = is_local(client)
        if local:
            speed_up_local_storage(
                client, [self.collection_name, documents_collection(self.collection_name)]
            )
        native = (not local) if native_search is None else native_search
        self._mirror = (
            LocalMirror.load(client, self.collection_name, self.encoder.dim) if local else None
        )
        chunker = Chunker(settings.chunk_size, settings.chunk_overlap, self.encoder.count_tokens)
        signature = (
            f"{INDEX_VERSION}|{self.encoder.name}|{settings.chunk_size}|{settings.chunk_overlap}"
        )
        self.writer = Writer(
            client, self.collection_name, self.encoder, chunker, signature, self._mirror
        )
        self.searcher = Searcher(
            client, settings, self.encoder, self._mirror, native=native, lexical=lexical
        )
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- ingestion

    def ingest_file(
        self,
        path: Path,
        *,
        owner: str,
        collection: str = "default",
        document_id: str | None = None,
        title: str | None = None,
    ) -> IngestResult:
        """Parse and index the file at ``path``; raises an ``IngestError`` if it cannot.

        Without ``document_id`` the id is derived from the collection and the file name, so
        ingesting the same name again is ``unchanged`` or ``replaced``, never a duplicate.
        """
        parsed = parse_file(Path(path), self.settings.max_upload_bytes)
        if title:
            parsed.title = title
        return self.ingest_documents([(parsed, document_id)], owner=owner, collection=collection)[0]

    def ingest_bytes(
        self,
        data: bytes,
        filename: str,
        *,
        owner: str,
        collection: str = "default",
        document_id: str | None = None,
    ) -> IngestResult:
        """Parse and index an uploaded file; its type comes from ``filename``.

        The default document id is derived from the collection and ``filename``.
        """
        parsed = parse_bytes(data, filename, self.settings.max_upload_bytes)
        return self.ingest_documents([(parsed, document_id)], owner=owner, collection=collection)[0]

    def ingest_text(
        self,
        text: str,
        *,
        title: str,
        owner: str,
        collection: str = "default",
        document_id: str | None = None,
    ) -> IngestResult:
        """Index raw text (read as Markdown) under ``title``.

        The default document id is derived from the collection and ``title``.
        """
        if not text.strip():
            raise UnparseableFile(title, "the text is empty")
        parsed = ParsedDocument(title, title, [Section(text, None, True)])
        return self.ingest_documents([(parsed, document_id)], owner=owner, collection=collection)[0]

    def ingest_documents(
        self,
        documents: Iterable[tuple[ParsedDocument, str | None]],
        *,
        owner: str,
        collection: str = "default",
        progress: bool = False,
        on_error: Callable[[IngestError], None] | None = None,
    ) -> list[IngestResult]:
        """Index parsed documents as one pipelined batch (see ``retriever.writer``).

        ``documents`` may be a lazy iterable (parsing then overlaps with embedding). Each
        document becomes visible whole or not at all; an unchanged one is skipped; one with
        nothing to index goes to ``on_error``, or is raised without it.
        """
        with self._lock:
            return self.writer.ingest(
                documents, owner=owner, collection=collection, progress=progress, on_error=on_error
            )

    # ---------------------------------------------------------------- documents

    def delete_document(self, document_id: str, *, owner: str) -> int:
        """Remove a document and all its chunks; returns how many chunks were removed."""
        with self._lock:
            return self.writer.delete(document_id, owner=owner)

    def list_documents(self, owner: str, collection: str | None = None) -> list[DocumentInfo]:
        """The owner's documents (in one collection, or all), newest first."""
        if self._mirror is not None:
            payloads = [
                d
                for d in self._mirror.documents()
                if d["owner"] == owner and (collection is None or d["collection"] == collection)
            ]
        else:
            payloads = self._scroll_registry(owner, collection)
        docs = [
            DocumentInfo(
                document_id=p["document_id"],
                title=p["title"],
                source=p.get("source", ""),
                collection=p["collection"],
                owner=p["owner"],
                chunks=int(p["chunks"]),
                content_hash=p["content_hash"],
                ingested_at=p.get("ingested_at", ""),
            )
            for p in payloads
        ]
        return sorted(docs, key=lambda d: (d.ingested_at, d.document_id), reverse=True)

    def _scroll_registry(self, owner: str, collection: str | None) -> list[dict[str, Any]]:
        payloads: list[dict[str, Any]] = []
        offset: Any = None
        flt = models.Filter(must=match(owner=owner, collection=collection))
        while True:
            records, offset = self.client.scroll(
                documents_collection(self.collection_name),
                scroll_filter=flt,
                limit=256,
                offset=offset,
                with_payload=True,
            )
            payloads.extend(dict(r.payload or {}) for r in records)
            if offset is None:
                return payloads

    # ---------------------------------------------------------------- search

    def search(
        self,
        query: str,
        *,
        owner: str | None,
        collection: str | None = None,
        k: int = 5,
        mode: Mode = "hybrid",
    ) -> list[SearchResult]:
        """The ``k`` best chunks for ``query`` among those ``owner`` may see.

        ``owner=None`` searches every owner (evaluation and administration only). An empty
        query or collection gives an empty list.
        """
        return self.searcher.search(query, owner=owner, collection=collection, k=k, mode=mode)
