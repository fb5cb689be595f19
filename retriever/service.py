"""The retriever: documents in, ranked chunks out, per owner and collection.

``Retriever`` is the one object the API, memory-free tools and the CLIs hold. It owns the
Qdrant client, the encoder and (in local mode) the in-process mirror, and hands writing
to ``writer.DocumentWriter`` and reading to ``search.Searcher``. Methods are synchronous;
the API calls them from a worker thread. Writes are serialised by a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

from qdrant_client import QdrantClient, models

from retriever.chunking import Chunker
from retriever.encoders import get_encoder
from retriever.errors import UnparseableFile
from retriever.local_mirror import LocalMirror
from retriever.parsing import ParsedDocument, Section, parse_bytes, parse_file
from retriever.qdrant import (
    documents_collection,
    ensure_collections,
    is_local,
    match_fields,
    speed_up_local_storage,
)
from retriever.results import (
    MODES,
    DocumentInfo,
    IngestResult,
    Mode,
    SearchResult,
    Status,
    default_document_id,
)
from retriever.search import Searcher, SearchOptions
from retriever.settings import M3_PREFIX, RetrieverSettings
from retriever.writer import INDEX_VERSION, DocumentWriter

__all__ = [
    "INDEX_VERSION",
    "MODES",
    "DocumentInfo",
    "IngestResult",
    "Mode",
    "Retriever",
    "SearchResult",
    "Status",
    "default_document_id",
]


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
        """
        self.client = client
        self.settings = settings
        self.collection_name = settings.qdrant_collection
        self.encoder = get_encoder(settings)
        lexical = settings.embedding_model.startswith(M3_PREFIX)
        ensure_collections(
            client, self.collection_name, self.encoder.dim, lexical, settings.embedder_key
        )
        local = is_local(client)
        if local:
            speed_up_local_storage(
                client, [self.collection_name, documents_collection(self.collection_name)]
            )
        self._mirror = (
            LocalMirror.load(client, self.collection_name, self.encoder.dim) if local else None
        )
        native = (not local) if native_search is None else native_search
        chunker = Chunker(settings.chunk_size, settings.chunk_overlap, self.encoder.count_tokens)
        signature = f"{self.encoder.name}|{settings.chunk_size}|{settings.chunk_overlap}"
        self._writer = DocumentWriter(
            client, self.collection_name, self.encoder, chunker, signature, self._mirror
        )
        self.searcher = Searcher(
            client,
            settings,
            self.encoder,
            None if native else self._mirror,
            lexical=lexical,
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
        documents: Sequence[tuple[ParsedDocument, str | None]],
        *,
        owner: str,
        collection: str = "default",
        progress: bool = False,
    ) -> list[IngestResult]:
        """Index parsed documents in one batch (embedding is batched across them).

        Each document becomes visible whole or not at all; an unchanged one is skipped.
        """
        with self._lock:
            return self._writer.ingest(
                documents, owner=owner, collection=collection, progress=progress
            )

    # ---------------------------------------------------------------- documents

    def delete_document(self, document_id: str, *, owner: str) -> int:
        """Remove a document and all its chunks; returns how many chunks were removed."""
        with self._lock:
            return self._writer.delete(document_id, owner=owner)

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
        flt = models.Filter(must=match_fields(owner=owner, collection=collection))
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

    def search(self, query: str, **options: Unpack[SearchOptions]) -> list[SearchResult]:
        """The best chunks for ``query`` that ``owner`` may see (see ``Searcher.search``)."""
        return self.searcher.search(query, **options)
