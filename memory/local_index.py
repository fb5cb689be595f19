"""A per-user in-memory index in front of mem0's Qdrant store, for Qdrant local mode only.

Why: Qdrant's local mode evaluates a payload filter by calling a Python predicate on
every point of the collection (no payload index), about 10 µs a point on a small CPU.
Every recall is scoped by ``user_id``, so with 10 users x 1,000 memories one filtered
search costs ~100 ms, five times the recall budget, whoever asks. An unfiltered
search of the same collection costs ~5 ms; mem0 adds nothing measurable on top.

Local mode allows one process per storage path, and in this process every write to the
memory collection goes through mem0's store, so a write-through copy of each user's
vectors is exact: :class:`UserScopedStore` wraps that store, keeps the copy in step on
insert/update/delete, and answers searches and listings scoped to exactly one user from
it (cosine similarity with numpy, the same score Qdrant computes). Anything else goes to
Qdrant. With the Qdrant server none of this is used: mem0 creates payload indexes there.
"""

from __future__ import annotations

import builtins
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

logger = logging.getLogger(__name__)

_SCROLL_PAGE = 1024


def is_local(client: QdrantClient) -> bool:
    """Whether ``client`` runs Qdrant in-process (``path=...`` or ``:memory:``)."""
    options = client.init_options
    return options.get("path") is not None or options.get("location") == ":memory:"


def _unit(vector: Any) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


@dataclass
class _UserRows:
    """One user's points: id -> (unit vector, payload), plus a stacked matrix for search."""

    rows: dict[str, tuple[np.ndarray, dict[str, Any]]] = field(default_factory=dict)
    _ids: list[str] = field(default_factory=list)
    _matrix: np.ndarray | None = None

    def put(self, point_id: str, vector: np.ndarray, payload: dict[str, Any]) -> None:
        self.rows[point_id] = (vector, payload)
        self._matrix = None

    def drop(self, point_id: str) -> None:
        if self.rows.pop(point_id, None) is not None:
            self._matrix = None

    def matrix(self) -> tuple[list[str], np.ndarray]:
        if self._matrix is None:
            self._ids = list(self.rows)
            self._matrix = (
                np.stack([self.rows[i][0] for i in self._ids])
                if self._ids
                else np.zeros((0, 0), dtype=np.float32)
            )
        return self._ids, self._matrix


def _user_only(filters: dict[str, Any] | None) -> str | None:
    """The user id when ``filters`` is exactly ``{"user_id": <str>}``, else ``None``."""
    if filters and set(filters) == {"user_id"} and isinstance(filters["user_id"], str):
        return filters["user_id"]
    return None


class UserScopedStore:
    """mem0's Qdrant vector store, with searches and listings for one user served from memory.

    Implements the methods mem0 calls on its vector store; those it does not override are
    handed to the wrapped store unchanged.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self._client: QdrantClient = store.client
        self._collection: str = store.collection_name
        self._lock = threading.RLock()
        self._users: dict[str, _UserRows] = {}
        self._owner: dict[str, str] = {}
        self._load()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _load(self) -> None:
        offset: Any = None
        while True:
            points, offset = self._client.scroll(
                self._collection,
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            for point in points:
                self._remember_point(str(point.id), point.vector, point.payload or {})
            if offset is None:
                break
        logger.debug("memory index: %d points of %d users", len(self._owner), len(self._users))

    def _remember_point(self, point_id: str, vector: Any, payload: dict[str, Any]) -> None:
        if isinstance(vector, dict):  # named vectors: mem0 keeps the dense one unnamed
            vector = vector.get("")
        user_id = payload.get("user_id")
        self._forget_point(point_id)
        if vector is None or not isinstance(user_id, str):
            return
        self._users.setdefault(user_id, _UserRows()).put(point_id, _unit(vector), dict(payload))
        self._owner[point_id] = user_id

    def _forget_point(self, point_id: str) -> None:
        user_id = self._owner.pop(point_id, None)
        if user_id is not None:
            self._users[user_id].drop(point_id)

    # ------------------------------------------------------------ writes (kept in step)

    def insert(
        self,
        vectors: builtins.list[Any],
        payloads: builtins.list[dict[str, Any]] | None = None,
        ids: Any = None,
    ) -> None:
        """Insert into Qdrant, then into the copy."""
        self._store.insert(vectors=vectors, payloads=payloads, ids=ids)
        with self._lock:
            for index, vector in enumerate(vectors):
                point_id = str(index if ids is None else ids[index])
                self._remember_point(point_id, vector, payloads[index] if payloads else {})

    def update(
        self, vector_id: Any, vector: Any = None, payload: dict[str, Any] | None = None
    ) -> None:
        """Update in Qdrant, then refresh the point in the copy from Qdrant."""
        self._store.update(vector_id=vector_id, vector=vector, payload=payload)
        (point,) = self._client.retrieve(
            self._collection, ids=[vector_id], with_payload=True, with_vectors=True
        ) or (None,)
        with self._lock:
            if point is None:
                self._forget_point(str(vector_id))
            else:
                self._remember_point(str(point.id), point.vector, point.payload or {})

    def delete(self, vector_id: Any) -> None:
        """Delete from Qdrant, then from the copy."""
        self._store.delete(vector_id=vector_id)
        with self._lock:
            self._forget_point(str(vector_id))

    def reset(self) -> None:
        """Empty the collection and the copy."""
        self._store.reset()
        with self._lock:
            self._users.clear()
            self._owner.clear()

    def delete_col(self) -> None:
        """Drop the collection and the copy."""
        self._store.delete_col()
        with self._lock:
            self._users.clear()
            self._owner.clear()

    # ------------------------------------------------------------ reads scoped to one user

    def search(
        self, query: str, vectors: Any, top_k: int = 5, filters: dict[str, Any] | None = None
    ) -> builtins.list[models.ScoredPoint]:
        """Nearest points by cosine; one user's from the copy, anything else from Qdrant."""
        user_id = _user_only(filters)
        if user_id is None:
            return list(
                self._store.search(query=query, vectors=vectors, top_k=top_k, filters=filters)
            )
        with self._lock:
            rows = self._users.get(user_id)
            if rows is None or not rows.rows:
                return []
            ids, matrix = rows.matrix()
            payloads = [rows.rows[i][1] for i in ids]
        scores = matrix @ _unit(vectors)
        top = np.argsort(-scores, kind="stable")[:top_k]
        return [
            models.ScoredPoint(
                id=ids[i], version=0, score=float(scores[i]), payload=dict(payloads[i])
            )
            for i in top
        ]

    def list(self, filters: dict[str, Any] | None = None, top_k: int = 100) -> Any:
        """Points of one user (as Qdrant's scroll returns them), or Qdrant's own listing."""
        user_id = _user_only(filters)
        if user_id is None:
            return self._store.list(filters=filters, top_k=top_k)
        with self._lock:
            rows = self._users.get(user_id)
            items = list(rows.rows.items())[:top_k] if rows else []
        records = [models.Record(id=i, payload=dict(payload)) for i, (_, payload) in items]
        return records, None
