"""The Qdrant client and the two collections the retriever keeps.

One client per process: Qdrant's local mode locks its storage path, so the API opens the
client once and hands it to the retriever and to memory alike.

``<QDRANT_COLLECTION>`` holds one point per chunk with a named dense vector ``dense``
(cosine), a named sparse vector ``bm25`` with the IDF modifier (see ``encoders``), for
BGE-M3 a sparse ``lexical`` vector, and payload indexes on document id, owner, collection
and visibility. ``<QDRANT_COLLECTION>_documents`` holds one vector-less point per
document (owner, collection, title, content hash, chunk count): writing it is the moment
a new version of a document becomes the current one.
"""

from __future__ import annotations

import logging
import uuid
import warnings

from qdrant_client import QdrantClient, models

from retriever.settings import RetrieverSettings

logger = logging.getLogger(__name__)

DENSE = "dense"
BM25 = "bm25"
LEXICAL = "lexical"
_NAMESPACE = uuid.UUID("5b0c7a57-3c39-4f3e-8f0e-6d1f6a9f2b11")
_KEYWORD_FIELDS = ("document_id", "owner", "collection", "content_hash")


class QdrantBusy(RuntimeError):
    """Another process owns the local Qdrant store."""


def open_client(settings: RetrieverSettings) -> QdrantClient:
    """The process's Qdrant client: the server at QDRANT_URL, else local mode on disk."""
    if settings.qdrant_url:
        logger.info("using Qdrant server at %s", settings.qdrant_url)
        return QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    settings.qdrant_path.mkdir(parents=True, exist_ok=True)
    logger.info("using Qdrant local mode at %s", settings.qdrant_path)
    try:
        return QdrantClient(path=str(settings.qdrant_path))
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        # Local mode allows one process per storage folder: usually the running API.
        raise QdrantBusy(
            f"the local Qdrant store at {settings.qdrant_path} is in use by another process "
            "(the API of `make run`?). Upload through the API or the UI instead, stop that "
            "process first, or run a Qdrant server and set QDRANT_URL."
        ) from exc


def is_local(client: QdrantClient) -> bool:
    """Whether ``client`` runs Qdrant in-process (local mode) rather than talking to a server."""
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


def speed_up_local_storage(client: QdrantClient, names: list[str]) -> None:
    """Switch local-mode storage of collections ``names`` to SQLite WAL, synchronous=NORMAL.

    Local mode commits every point on its own with a full fsync: 22 ms per point on this
    machine's disk, which capped ingestion below 20 docs/s. In WAL mode with
    synchronous=NORMAL each write is still atomic and survives a crashed process (SQLite's
    documented guarantee); a power cut can lose the last writes, never corrupt the file.
    Measured: 0.3 ms per point. qdrant-client exposes no setting for this, so the
    connection is reached through its local-mode internals; if they change, the storage
    keeps its default (slow but correct) and a warning says so.
    """
    collections = getattr(getattr(client, "_client", None), "collections", {})
    for name in names:
        connection = getattr(getattr(collections.get(name), "storage", None), "storage", None)
        if connection is None:
            logger.warning("cannot tune local Qdrant storage of %s; ingestion will be slow", name)
            continue
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")


def documents_collection(name: str) -> str:
    """Name of the per-document registry beside chunk collection ``name``."""
    return f"{name}_documents"


def point_id(*parts: str | int) -> str:
    """A deterministic UUID for a point built from ``parts``."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


class EmbedderMismatch(RuntimeError):
    """The chunk collection was built by another embedding model than the configured one."""


def ensure_collections(
    client: QdrantClient, name: str, dim: int, lexical: bool, embedder: str
) -> None:
    """Create the chunk and document collections if missing; refuse another embedder's.

    The chunk collection records the embedding model that built it (collection metadata
    ``embedder``). Two models with the same dimension (all-MiniLM-L6-v2 and
    multilingual-e5-small both make 384) would otherwise search each other's vectors and
    return well-formed nonsense.
    """
    if client.collection_exists(name):
        info = client.get_collection(name)
        vectors = info.config.params.vectors
        size = vectors[DENSE].size if isinstance(vectors, dict) and DENSE in vectors else None
        recorded = (info.config.metadata or {}).get("embedder")
        if recorded is not None and recorded != embedder:
            raise EmbedderMismatch(
                f"Qdrant collection {name!r} was built with the embedding model {recorded!r} "
                f"but EMBEDDING_MODEL now gives {embedder!r}: its vectors cannot be searched "
                f"with it. Set EMBEDDING_MODEL back to {recorded!r}, or set QDRANT_COLLECTION "
                "to a new name and ingest the documents again"
            )
        if size != dim:
            raise EmbedderMismatch(
                f"Qdrant collection {name!r} holds {size}-dim vectors but the embedding model "
                f"makes {dim}-dim ones; set QDRANT_COLLECTION to a new name or delete {name!r} "
                "and re-ingest"
            )
        if recorded is None:
            # Built before collections recorded their model: by the only model there was.
            logger.warning("collection %s records no embedding model; taking %s", name, embedder)
            client.update_collection(name, metadata={"embedder": embedder})
    else:
        sparse = {BM25: models.SparseVectorParams(modifier=models.Modifier.IDF)}
        if lexical:
            sparse[LEXICAL] = models.SparseVectorParams()
        client.create_collection(
            name,
            vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
            sparse_vectors_config=sparse,
            metadata={"embedder": embedder},
        )
        with warnings.catch_warnings():
            # Local mode ignores payload indexes (and says so); the server uses them.
            warnings.simplefilter("ignore", UserWarning)
            for field in _KEYWORD_FIELDS:
                client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD)
            client.create_payload_index(name, "live", models.PayloadSchemaType.BOOL)
        logger.info("created Qdrant collection %s (%s, %d dims)", name, embedder, dim)
    registry = documents_collection(name)
    if not client.collection_exists(registry):
        client.create_collection(registry, vectors_config={})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for field in ("document_id", "owner", "collection"):
                client.create_payload_index(registry, field, models.PayloadSchemaType.KEYWORD)


def match_fields(**fields: str | bool | None) -> list[models.Condition]:
    """Exact-match conditions for the fields that are not None."""
    return [
        models.FieldCondition(key=key, match=models.MatchValue(value=value))
        for key, value in fields.items()
        if value is not None
    ]
