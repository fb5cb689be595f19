"""The retriever: documents in, ranked chunks out, per owner and collection.

Write path: parse, chunk, embed (dense + BM25 [+ BGE-M3 lexical]), upsert the chunk
points, then write the document's registry row, then retire the previous version's
points. The registry row (one point, one write) is the switch between versions, so a
crash leaves a document either wholly old or wholly new. With a Qdrant server, chunk
points are written hidden (``live=false``) and revealed by one filtered payload update.

Read path: dense and keyword lists, each filtered by owner, collection and visibility
inside the search, fused (``fusion``), optionally reranked by a cross-encoder. Methods are
synchronous; the API calls them from a worker thread. Writes are serialised by a lock.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from retriever.chunking import Chunk, Chunker
from retriever.encoders import (
    Sparse,
    bm25_document,
    bm25_query,
    get_encoder,
    get_reranker,
)
from retriever.errors import UnparseableFile
from retriever.fusion import fuse
from retriever.index import LocalIndex, StoredPoint
from retriever.parsing import ParsedDocument, Section, parse_bytes, parse_file
from retriever.qdrant import (
    BM25,
    DENSE,
    LEXICAL,
    documents_collection,
    ensure_collections,
    is_local,
    point_id,
    speed_up_local_storage,
)
from retriever.settings import M3_PREFIX, RetrieverSettings

logger = logging.getLogger(__name__)

Mode = Literal["bm25", "dense", "hybrid", "hybrid+rerank"]
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid", "hybrid+rerank")
Status = Literal["ingested", "unchanged", "replaced"]
# Bumped when chunk text or vectors change meaning, so old documents are re-indexed.
INDEX_VERSION = 1
_UPSERT_BATCH = 256


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


@dataclass(slots=True)
class _Hit:
    id: str
    score: float
    payload: dict[str, Any]


def default_document_id(collection: str, source: str) -> str:
    """The id a document gets when none is given: stable per collection and source name."""
    return "doc_" + hashlib.sha256(f"{collection}\x1f{source}".encode()).hexdigest()[:20]


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
        self._lexical = settings.embedding_model.startswith(M3_PREFIX)
        ensure_collections(client, self.collection_name, self.encoder.dim, self._lexical)
        self._local = is_local(client)
        if self._local:
            speed_up_local_storage(
                client, [self.collection_name, documents_collection(self.collection_name)]
            )
        self._native = (not self._local) if native_search is None else native_search
        self._mirror = (
            LocalIndex.load(client, self.collection_name, self.encoder.dim) if self._local else None
        )
        self._chunker = Chunker(
            settings.chunk_size, settings.chunk_overlap, self.encoder.count_tokens
        )
        self._signature = (
            f"{INDEX_VERSION}|{self.encoder.name}|{settings.chunk_size}|{settings.chunk_overlap}"
        )
        self._lock = threading.RLock()
        self._warned_no_reranker = False

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
            results: list[IngestResult] = []
            todo: list[
                tuple[int, ParsedDocument, str, str, list[Chunk], dict[str, Any] | None]
            ] = []
            for parsed, given_id in documents:
                doc_id = given_id or default_document_id(collection, parsed.source)
                digest = self._content_hash(parsed, collection)
                existing = self._document(owner, doc_id)
                if existing is not None and existing["content_hash"] == digest:
                    results.append(
                        IngestResult(
                            doc_id,
                            parsed.title,
                            int(existing["chunks"]),
                            "unchanged",
                            digest,
                            parsed.source,
                            collection,
                        )
                    )
                    continue
                chunks = self._chunker.chunk(parsed)
                if not chunks:
                    raise UnparseableFile(parsed.source, "no text to index")
                status: Status = "replaced" if existing is not None else "ingested"
                results.append(
                    IngestResult(
                        doc_id, parsed.title, len(chunks), status, digest, parsed.source, collection
                    )
                )
                todo.append((len(results) - 1, parsed, doc_id, digest, chunks, existing))
            if todo:
                self._write(todo, owner, collection, progress)
            return results

    def _content_hash(self, parsed: ParsedDocument, collection: str) -> str:
        text = "\x1e".join(f"{s.page}\x1f{s.markdown}\x1f{s.text}" for s in parsed.sections)
        key = f"{self._signature}\x1e{collection}\x1e{parsed.title}\x1e{text}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    @staticmethod
    def _index_text(title: str, chunk: Chunk) -> str:
        """What is embedded and keyword-indexed: the chunk with its title and heading."""
        head = [title]
        if chunk.heading and not chunk.text.lstrip("# ").startswith(chunk.heading.split(" > ")[-1]):
            head.append(chunk.heading)
        return "\n".join([*head, chunk.text])

    def _write(
        self,
        todo: list[tuple[int, ParsedDocument, str, str, list[Chunk], dict[str, Any] | None]],
        owner: str,
        collection: str,
        progress: bool,
    ) -> None:
        texts = [self._index_text(p.title, c) for _, p, _, _, chunks, _ in todo for c in chunks]
        encoded = self.encoder.encode(texts, progress=progress)
        keyword = [bm25_document(t) for t in texts]
        offset = 0
        now = datetime.now(UTC).isoformat(timespec="seconds")
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="storing", unit="doc", disable=not progress)
        for start in range(0, len(todo), 64):
            group = todo[start : start + 64]
            points: list[StoredPoint] = []
            registry: list[models.PointStruct] = []
            for _, parsed, doc_id, digest, chunks, _ in group:
                for chunk in chunks:
                    sparse = {BM25: keyword[offset]}
                    if encoded.lexical is not None:
                        sparse[LEXICAL] = encoded.lexical[offset]
                    payload = {
                        "document_id": doc_id,
                        "owner": owner,
                        "collection": collection,
                        "title": parsed.title,
                        "source": parsed.source,
                        "content_hash": digest,
                        "position": chunk.position,
                        "page": chunk.page,
                        "heading": chunk.heading,
                        "text": chunk.text,
                        # Local mode: the registry decides visibility; server: revealed below.
                        "live": self._local,
                    }
                    pid = point_id(owner, doc_id, digest, chunk.position)
                    points.append(StoredPoint(pid, encoded.dense[offset], sparse, payload))
                    offset += 1
                registry.append(
                    models.PointStruct(
                        id=point_id(owner, doc_id),
                        vector={},
                        payload={
                            "document_id": doc_id,
                            "owner": owner,
                            "collection": collection,
                            "title": parsed.title,
                            "source": parsed.source,
                            "content_hash": digest,
                            "chunks": len(chunks),
                            "ingested_at": now,
                        },
                    )
                )
            for i in range(0, len(points), _UPSERT_BATCH):
                self.client.upsert(
                    self.collection_name,
                    [_to_struct(p) for p in points[i : i + _UPSERT_BATCH]],
                    wait=True,
                )
            if self._mirror is not None:
                self._mirror.add(points)
            # The switch: from here each document of the group is its new version.
            self.client.upsert(documents_collection(self.collection_name), registry, wait=True)
            new_ids: list[models.ExtendedPointId] = [p.id for p in points]
            if not self._local:
                self.client.set_payload(
                    self.collection_name, {"live": True}, points=new_ids, wait=True
                )
            for record in registry:
                doc_payload: dict[str, Any] = dict(record.payload or {})
                doc_id = str(doc_payload["document_id"])
                digest = str(doc_payload["content_hash"])
                if self._mirror is not None:
                    self._mirror.set_document(owner, doc_id, doc_payload)
                self._retire(owner, doc_id, digest)
            bar.update(len(group))
        bar.close()

    def _retire(self, owner: str, document_id: str, keep_hash: str) -> None:
        """Delete a document's chunks of every version but ``keep_hash``."""
        if self._mirror is not None:
            old = [
                pid
                for pid in self._mirror.point_ids(owner, document_id)
                if self._point_hash(pid) != keep_hash
            ]
            if old:
                self.client.delete(self.collection_name, models.PointIdsList(points=old), wait=True)
                self._mirror.remove(old)
            return
        self.client.delete(
            self.collection_name,
            models.FilterSelector(
                filter=models.Filter(
                    must=_match(owner=owner, document_id=document_id),
                    must_not=_match(content_hash=keep_hash),
                )
            ),
            wait=True,
        )

    def _point_hash(self, pid: str) -> str:
        assert self._mirror is not None
        return self._mirror.point_hash(pid)

    def _document(self, owner: str, document_id: str) -> dict[str, Any] | None:
        if self._mirror is not None:
            return self._mirror.document(owner, document_id)
        records = self.client.retrieve(
            documents_collection(self.collection_name), [point_id(owner, document_id)]
        )
        return dict(records[0].payload or {}) if records else None

    # ---------------------------------------------------------------- documents

    def delete_document(self, document_id: str, *, owner: str) -> int:
        """Remove a document and all its chunks; returns how many chunks were removed."""
        with self._lock:
            existing = self._document(owner, document_id)
            registry = documents_collection(self.collection_name)
            registry_id = models.PointIdsList(points=[point_id(owner, document_id)])
            if self._mirror is not None:
                ids = self._mirror.point_ids(owner, document_id)
                if existing is None and not ids:
                    return 0
                # Registry first: the whole document disappears in that one write.
                self.client.delete(registry, registry_id, wait=True)
                self._mirror.set_document(owner, document_id, None)
                visible = [
                    i for i in ids if existing and self._point_hash(i) == existing["content_hash"]
                ]
                if ids:
                    self.client.delete(
                        self.collection_name, models.PointIdsList(points=ids), wait=True
                    )
                    self._mirror.remove(ids)
                return len(visible)
            if existing is None:
                return 0
            selector = models.Filter(must=_match(owner=owner, document_id=document_id))
            count = self.client.count(
                self.collection_name,
                count_filter=models.Filter(
                    must=_match(owner=owner, document_id=document_id, live=True)
                ),
                exact=True,
            ).count
            self.client.delete(
                self.collection_name, models.FilterSelector(filter=selector), wait=True
            )
            self.client.delete(registry, registry_id, wait=True)
            return int(count)

    def list_documents(self, owner: str, collection: str | None = None) -> list[DocumentInfo]:
        """The owner's documents (in one collection, or all), newest first."""
        if self._mirror is not None:
            payloads = [
                d
                for d in self._mirror.documents()
                if d["owner"] == owner and (collection is None or d["collection"] == collection)
            ]
        else:
            payloads = []
            offset: Any = None
            flt = models.Filter(must=_match(owner=owner, collection=collection))
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
                    break
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
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {MODES}")
        if not query.strip() or k <= 0:
            return []
        depth = max(k, self.settings.candidates) if mode.startswith("hybrid") else k
        encoded = self.encoder.encode([query]) if mode != "bm25" else None
        lists: dict[str, list[_Hit]] = {}
        requests: dict[str, np.ndarray | Sparse] = {}
        if encoded is not None:
            requests[DENSE] = encoded.dense[0]
        if mode != "dense":
            requests[BM25] = bm25_query(query)
            if self._lexical and encoded is not None and encoded.lexical:
                requests[LEXICAL] = encoded.lexical[0]
        lists = self._search_lists(requests, owner, collection, depth)
        if mode in ("dense", "bm25"):
            hits = lists[DENSE if mode == "dense" else BM25][:k]
            return [self._result(h, {mode: h.score}) for h in hits]
        return self._hybrid(query, lists, k, rerank=mode == "hybrid+rerank")

    def _hybrid(
        self, query: str, lists: dict[str, list[_Hit]], k: int, rerank: bool
    ) -> list[SearchResult]:
        weight = self.settings.dense_weight
        keyword = [BM25, LEXICAL] if LEXICAL in lists else [BM25]
        names = [DENSE, *keyword]
        weights = [weight] + [(1 - weight) / len(keyword)] * len(keyword)
        fused = fuse(
            [[(h.id, h.score) for h in lists[n]] for n in names],
            weights,
            method=self.settings.fusion,
        )
        by_id: dict[str, _Hit] = {}
        per_list: dict[str, dict[str, float]] = {}
        for name in names:
            for hit in lists[name]:
                by_id.setdefault(hit.id, hit)
                per_list.setdefault(hit.id, {})[name] = hit.score
        keep = max(k, self.settings.rerank_candidates) if rerank else k
        results = [self._result(_Hit(i, s, by_id[i].payload), per_list[i]) for i, s in fused[:keep]]
        if rerank:
            if self.settings.reranker_model:
                return self._rerank(query, results, k)
            if not self._warned_no_reranker:
                logger.warning("hybrid+rerank asked but RERANKER_MODEL is empty: not reranking")
                self._warned_no_reranker = True
        return results[:k]

    def _rerank(self, query: str, results: list[SearchResult], k: int) -> list[SearchResult]:
        head = results[: self.settings.rerank_candidates]
        scores = get_reranker(self.settings.reranker_model).score(
            query, [f"{r.title}\n{r.text}" for r in head]
        )
        for result, score in zip(head, scores, strict=True):
            result.scores["fused"] = result.score
            result.scores["rerank"] = score
            result.score = score
        head.sort(key=lambda r: -r.score)
        return (head + results[len(head) :])[:k]

    def _search_lists(
        self,
        requests: dict[str, np.ndarray | Sparse],
        owner: str | None,
        collection: str | None,
        limit: int,
    ) -> dict[str, list[_Hit]]:
        if not self._native and self._mirror is not None:
            snap = self._mirror.snapshot()
            allowed = snap.mask(owner, collection)
            out: dict[str, list[_Hit]] = {}
            for name, query in requests.items():
                if isinstance(query, Sparse):
                    pairs = snap.search_sparse(name, query, allowed, limit)
                else:
                    pairs = snap.search_dense(query, allowed, limit)
                out[name] = [_Hit(snap.ids[i], s, snap.payloads[i]) for i, s in pairs]
            return out
        flt = models.Filter(must=_match(live=True, owner=owner, collection=collection))
        names = [n for n, q in requests.items() if not (isinstance(q, Sparse) and not q.indices)]
        batch = [
            models.QueryRequest(
                query=(
                    models.SparseVector(indices=q.indices, values=q.values)
                    if isinstance(q, Sparse)
                    else q.tolist()
                ),
                using=name,
                filter=flt,
                limit=limit,
                with_payload=True,
            )
            for name in names
            for q in [requests[name]]
        ]
        responses = self.client.query_batch_points(self.collection_name, batch) if batch else []
        out = {name: [] for name in requests}
        for name, response in zip(names, responses, strict=True):
            out[name] = [
                _Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points
            ]
        return out

    @staticmethod
    def _result(hit: _Hit, scores: dict[str, float]) -> SearchResult:
        p = hit.payload
        return SearchResult(
            chunk_id=hit.id,
            document_id=p["document_id"],
            text=p["text"],
            score=hit.score,
            title=p["title"],
            page=p.get("page"),
            heading=p.get("heading"),
            position=int(p["position"]),
            collection=p["collection"],
            source=p.get("source", ""),
            scores=dict(scores),
        )


def _match(**fields: str | bool | None) -> list[models.Condition]:
    """Exact-match conditions for the fields that are not None."""
    return [
        models.FieldCondition(key=key, match=models.MatchValue(value=value))
        for key, value in fields.items()
        if value is not None
    ]


def _to_struct(point: StoredPoint) -> models.PointStruct:
    vector: dict[str, Any] = {DENSE: point.dense.tolist()}
    for name, value in point.sparse.items():
        if not value.indices:
            continue  # a chunk of stop words only: nothing to match on
        vector[name] = models.SparseVector(indices=value.indices, values=value.values)
    return models.PointStruct(id=point.id, vector=vector, payload=point.payload)
