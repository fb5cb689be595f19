"""A small typed interface over mem0's ``Memory``, scoped by user, that never breaks a chat.

mem0 is built lazily (importing it pulls in sentence-transformers, seconds on a small
CPU) over the process's single Qdrant client: in local mode a second client on the same
path fails, so mem0 is handed the open one. In local mode, searches scoped to one user are
answered from a per-user index (:mod:`memory.local_index`): local Qdrant filters by
scanning every point in Python, which alone would take recall past its budget. mem0's
telemetry is switched off and its files (home directory, history database) are kept in
the data directory before it is imported.

``remember`` is the only call that talks to the LLM. Extractions run in the background
(:mod:`memory.background`: one running per user, a few waiting, the oldest dropped), each
request bounded by ``MEMORY_TIMEOUT_S``, and never raise: a failing or slow memory only
costs a warning in the log, which says whether the model server was busy or unreachable.
Deleting a memory also deletes its rows in mem0's history, so a forgotten fact leaves no
copy behind.

Use from async code: ``await asyncio.to_thread(memories.recall, ...)`` before answering;
after the answer, ``memories.remember_in_background(...)`` (returns a future at once) or
``asyncio.to_thread(memories.remember, ...)``. Call ``warm_up()`` at start-up (in a
thread) so the first recall does not load the embedder, and ``close()`` at shutdown
before closing the Qdrant client. Keep one ``UserMemory`` per process and collection:
the local-mode index assumes every write goes through it.
"""

from __future__ import annotations

import builtins
import logging
import os
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from memory.background import ExtractionQueue
from memory.extraction import COMPACT_PROMPT, CheckedExtractor, explicit_statements, log_failure
from memory.settings import MemorySettings

if TYPE_CHECKING:
    from mem0 import Memory
    from qdrant_client import QdrantClient

logger = logging.getLogger(__name__)

# Roles whose text may be stored verbatim (infer=False): only what the user said.
_VERBATIM_ROLES = frozenset({"user"})


class MemoryItem(BaseModel):
    """One thing remembered about a user."""

    id: str
    text: str
    score: float | None = None
    """Relevance to the query (recall only); higher is closer."""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    thread_id: str | None = None
    """The conversation thread it was learned in, when known."""

    @classmethod
    def from_mem0(cls, row: dict[str, Any]) -> MemoryItem:
        """Build from a row of mem0's ``search``/``get_all``/``get`` results."""
        metadata = row.get("metadata") or {}
        return cls(
            id=str(row["id"]),
            text=row.get("memory", ""),
            score=row.get("score"),
            created_at=row.get("created_at"),
            updated_at=row.get("updated_at"),
            thread_id=metadata.get("thread_id"),
        )


def _check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id or any(c.isspace() for c in user_id):
        raise ValueError(f"user_id must be a non-empty identifier without spaces, got {user_id!r}")
    return user_id


def import_mem0(settings: MemorySettings) -> type[Memory]:
    """Import mem0 with telemetry off and its home inside the data directory."""
    settings.memory_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(settings.mem0_environ())
    if "mem0" in sys.modules:
        logger.debug("mem0 was imported before the memory settings were applied")
    from mem0 import Memory
    from mem0.memory import main as mem0_main
    from mem0.memory import telemetry as mem0_telemetry

    # mem0 reads MEM0_TELEMETRY once, at import; if something imported it earlier with
    # telemetry on, switch it off where it is checked.
    mem0_telemetry.MEM0_TELEMETRY = False
    mem0_main.MEM0_TELEMETRY = False  # type: ignore[attr-defined]
    return Memory


def mem0_config(settings: MemorySettings, client: QdrantClient) -> dict[str, Any]:
    """mem0's configuration: the given Qdrant client, the local embedder, the served LLM."""
    return {
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "collection_name": settings.collection,
                "embedding_model_dims": settings.embedding_dims,
                "client": client,
            },
        },
        "embedder": {
            "provider": "huggingface",
            "config": {
                "model": settings.embedder_path(),
                "embedding_dims": settings.embedding_dims,
            },
        },
        "llm": {
            "provider": "openai",
            "config": {
                "model": settings.llm_model_name,
                "openai_base_url": settings.llm_base_url,
                "api_key": settings.llm_api_key,
                "temperature": 0.0,
                "max_tokens": settings.extraction_max_tokens,
            },
        },
        "history_db_path": str(settings.history_db_path),
    }


class UserMemory:
    """Long-term memory of each user: recall, remember, list, forget.

    Every call is scoped by ``user_id``; no call reads or deletes another user's memory.
    The methods are synchronous (mem0 is): the API runs ``recall`` in a thread before
    answering and ``remember`` (or :meth:`remember_in_background`) after the answer is sent.
    """

    def __init__(self, settings: MemorySettings, client: QdrantClient) -> None:
        self.settings = settings
        self._client = client
        self._memory: Memory | None = None
        self._extractor: CheckedExtractor | None = None
        self._build_lock = threading.Lock()
        self._queue: ExtractionQueue[builtins.list[MemoryItem]] = ExtractionQueue(
            workers=settings.workers, per_user=settings.queue_per_user, empty=list
        )

    @property
    def enabled(self) -> bool:
        """Whether memory is switched on in the settings."""
        return self.settings.enabled

    def warm_up(self) -> None:
        """Build mem0 and load the embedder now, so the first recall is fast."""
        if self.enabled:
            self._mem0()

    def _mem0(self) -> Memory:
        if self._memory is not None:
            return self._memory
        with self._build_lock:
            if self._memory is None:
                self._memory = self._build()
        return self._memory

    def _build(self) -> Memory:
        started = time.perf_counter()
        memory_cls = import_mem0(self.settings)
        from openai import OpenAI

        with warnings.catch_warnings():
            # mem0 asks for payload indexes on any client it is handed; local mode warns
            # that it has none (it filters by scanning) — expected, not actionable.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            memory = memory_cls.from_config(mem0_config(self.settings, self._client))
        from memory.local_index import UserScopedStore, is_local

        if is_local(self._client):
            memory.vector_store = UserScopedStore(memory.vector_store)
        dims = memory.embedding_model.config.embedding_dims
        if dims != self.settings.embedding_dims:
            raise ValueError(
                f"the embedding model {self.settings.embedder_path()!r} outputs {dims} dimensions "
                f"but MEMORY_EMBEDDING_DIMS={self.settings.embedding_dims}; set it to {dims} "
                "and use a new MEMORY_COLLECTION"
            )
        # mem0's OpenAI client waits up to 10 minutes and retries twice; extraction must
        # give up within the remember() budget instead.
        llm: Any = memory.llm
        llm.client = OpenAI(
            base_url=self.settings.llm_base_url,
            api_key=self.settings.llm_api_key,
            timeout=self.settings.timeout_s,
            max_retries=0,
        )
        compact = self.settings.extraction_prompt == "compact"
        self._extractor = CheckedExtractor(llm, COMPACT_PROMPT if compact else None)
        memory.llm = self._extractor  # type: ignore[assignment]
        logger.info(
            "memory ready in %.1fs: collection %r, extraction by %r at %s (%s prompt)",
            time.perf_counter() - started,
            self.settings.collection,
            self.settings.llm_model_name,
            self.settings.llm_base_url,
            self.settings.extraction_prompt,
        )
        return memory

    # ----------------------------------------------------------------- reading

    def recall(self, user_id: str, query: str, k: int = 5) -> builtins.list[MemoryItem]:
        """The user's ``k`` memories most relevant to ``query``, best first.

        Returns ``[]`` when memory is off, the query is blank, or the search fails
        (logged): recall runs before every answer and must not fail it.
        """
        _check_user_id(user_id)
        if not self.enabled or not query.strip() or k <= 0:
            return []
        try:
            result = self._mem0().search(query, filters={"user_id": user_id}, top_k=k)
        except Exception:
            logger.warning("memory recall failed for user %r", user_id, exc_info=True)
            return []
        return [MemoryItem.from_mem0(row) for row in result["results"]]

    def list(self, user_id: str) -> builtins.list[MemoryItem]:
        """Everything remembered about the user (up to ``MEMORY_LIST_LIMIT``), newest first."""
        _check_user_id(user_id)
        if not self.enabled:
            return []
        result = self._mem0().get_all(filters={"user_id": user_id}, top_k=self.settings.list_limit)
        items = [MemoryItem.from_mem0(row) for row in result["results"]]
        items.sort(
            key=lambda item: item.created_at.timestamp() if item.created_at else 0.0, reverse=True
        )
        return items

    # ----------------------------------------------------------------- writing

    def remember(
        self,
        user_id: str,
        messages: builtins.list[dict[str, Any]],
        thread_id: str | None = None,
        *,
        infer: bool = True,
    ) -> builtins.list[MemoryItem]:
        """Extract and store what is worth remembering from a turn; return what was stored.

        With ``infer=True`` (the default) the served LLM extracts facts through mem0, in
        the user's extraction queue (a newer turn may push this one out: ``[]``).
        With ``infer=False`` the user's messages are stored verbatim, at once, without an LLM.
        Waits at most ``MEMORY_TIMEOUT_S``; a memory failure (server down, timeout,
        broken JSON, closed store) never raises: it logs a warning and returns ``[]``.
        Only a malformed ``user_id`` (a caller bug) raises ``ValueError``, as everywhere.
        """
        _check_user_id(user_id)
        if not self.enabled:
            return []
        if self._queue.closed:
            logger.warning("memory: closed; not remembering this turn of user %r", user_id)
            return []
        if not infer or threading.current_thread().name.startswith("memory-remember"):
            return self._remember_now(user_id, messages, thread_id, infer)
        future = self._queue.submit(
            user_id, lambda: self._remember_now(user_id, messages, thread_id, True)
        )
        try:
            return future.result(timeout=self.settings.timeout_s)
        except FutureTimeout:
            logger.warning(
                "memory: remember for user %r gave up after MEMORY_TIMEOUT_S=%.1fs; "
                "the extraction finishes in the background if the server answers",
                user_id,
                self.settings.timeout_s,
            )
            return []

    def remember_in_background(
        self,
        user_id: str,
        messages: builtins.list[dict[str, Any]],
        thread_id: str | None = None,
    ) -> Future[builtins.list[MemoryItem]]:
        """Queue :meth:`remember` in the user's extraction queue and return at once.

        For use after the answer is sent. The returned future never fails; its result
        is what was stored (``[]`` when a newer turn or shutdown dropped this one). The
        extraction request is bounded by ``MEMORY_TIMEOUT_S``.
        """
        _check_user_id(user_id)
        if self.enabled:
            return self._queue.submit(
                user_id, lambda: self._remember_now(user_id, messages, thread_id, True)
            )
        done: Future[builtins.list[MemoryItem]] = Future()
        done.set_result([])
        return done

    def _remember_now(
        self,
        user_id: str,
        messages: builtins.list[dict[str, Any]],
        thread_id: str | None,
        infer: bool,
    ) -> builtins.list[MemoryItem]:
        metadata = {"thread_id": thread_id} if thread_id else None
        try:
            memory = self._mem0()
            if not infer:
                return self._store_verbatim(memory, user_id, messages, metadata)
            return self._extract(memory, user_id, messages, metadata)
        except Exception as exc:
            if self._queue.closed:  # shut down under a late extraction: expected
                logger.debug("memory: remember for user %r ended by close: %s", user_id, exc)
            else:
                logger.warning(
                    "memory: remember failed for user %r: %s", user_id, exc, exc_info=True
                )
            return []

    def _store_verbatim(
        self,
        memory: Memory,
        user_id: str,
        messages: builtins.list[dict[str, Any]],
        metadata: dict[str, Any] | None,
    ) -> builtins.list[MemoryItem]:
        own = [
            {"role": m["role"], "content": m["content"]}
            for m in messages
            if m.get("role") in _VERBATIM_ROLES and isinstance(m.get("content"), str)
        ]
        if not own:
            return []
        result = memory.add(own, user_id=user_id, metadata=metadata, infer=False)
        return self._stored(memory, result)

    def _extract(
        self,
        memory: Memory,
        user_id: str,
        messages: builtins.list[dict[str, Any]],
        metadata: dict[str, Any] | None,
    ) -> builtins.list[MemoryItem]:
        assert self._extractor is not None  # built together with mem0
        self._extractor.reset()
        started = time.perf_counter()
        try:
            result = memory.add(messages, user_id=user_id, metadata=metadata, infer=True)
        except Exception as exc:
            if self._queue.closed:  # shut down under a late extraction: expected
                logger.debug("memory: extraction for user %r ended by close: %s", user_id, exc)
                return []
            log_failure(
                exc,
                user_id=user_id,
                elapsed_s=time.perf_counter() - started,
                settings=self.settings,
                waiting=self._queue.waiting(user_id),
            )
            return self._fallback(memory, user_id, messages, metadata)
        outcome = self._extractor.take()
        stored = self._stored(memory, result)
        if outcome is not None and outcome.problem:
            logger.warning(
                "memory: extraction for user %r by %r: %s; stored %d fact(s) from this turn",
                user_id,
                self.settings.llm_model_name,
                outcome.problem,
                len(stored),
            )
            if not outcome.facts:
                return self._fallback(memory, user_id, messages, metadata)
        return stored

    def _fallback(
        self,
        memory: Memory,
        user_id: str,
        messages: builtins.list[dict[str, Any]],
        metadata: dict[str, Any] | None,
    ) -> builtins.list[MemoryItem]:
        if not self.settings.fallback_explicit:
            return []
        statements = explicit_statements(messages)
        if not statements:
            return []
        logger.info(
            "memory: storing %d explicit statement(s) of user %r verbatim (fallback)",
            len(statements),
            user_id,
        )
        own = [{"role": "user", "content": text} for text in statements]
        result = memory.add(own, user_id=user_id, metadata=metadata, infer=False)
        return self._stored(memory, result)

    @staticmethod
    def _stored(memory: Memory, result: dict[str, Any]) -> builtins.list[MemoryItem]:
        items = []
        for row in result.get("results", []):
            if row.get("event") != "ADD":
                continue
            stored = memory.get(row["id"])
            if stored is not None:
                items.append(MemoryItem.from_mem0(stored))
        return items

    # --------------------------------------------------------------- forgetting

    def forget(self, user_id: str, memory_id: str) -> bool:
        """Delete one of the user's memories; ``False`` if the user has no memory ``memory_id``."""
        _check_user_id(user_id)
        if not self.enabled:
            return False
        try:
            uuid.UUID(memory_id)
        except (ValueError, AttributeError, TypeError):
            return False
        memory = self._mem0()
        row = memory.get(memory_id)
        if row is None or row.get("user_id") != user_id:
            return False
        self._delete(memory, memory_id)
        return True

    def forget_all(self, user_id: str) -> int:
        """Delete everything remembered about the user; return how many memories went."""
        _check_user_id(user_id)
        if not self.enabled:
            return 0
        memory = self._mem0()
        deleted = 0
        while True:
            batch = memory.get_all(filters={"user_id": user_id}, top_k=256)["results"]
            if not batch:
                break
            for row in batch:
                self._delete(memory, str(row["id"]))
            deleted += len(batch)
        self._purge_messages(memory, user_id)
        logger.info("memory: forgot %d memories of user %r", deleted, user_id)
        return deleted

    @staticmethod
    def _delete(memory: Memory, memory_id: str) -> None:
        """Delete from the vector store, then drop the memory's history rows (mem0 keeps them)."""
        memory.delete(memory_id)
        db = memory.db
        with db._lock:
            db.connection.execute("DELETE FROM history WHERE memory_id = ?", (memory_id,))
            db.connection.commit()

    @staticmethod
    def _purge_messages(memory: Memory, user_id: str) -> None:
        """Drop the user's recent messages that mem0 keeps as context for extraction."""
        from mem0.memory.main import _build_session_scope

        db = memory.db
        with db._lock:
            db.connection.execute(
                "DELETE FROM messages WHERE session_scope = ?",
                (_build_session_scope({"user_id": user_id}),),
            )
            db.connection.commit()

    def close(self) -> None:
        """Stop extracting and close mem0's history; returns within ``MEMORY_CLOSE_GRACE_S``.

        Waiting turns are dropped (logged with a count); one running gets the grace, then
        is left to end on its own (its request is bounded by ``MEMORY_TIMEOUT_S``, and its
        late failure against the closed store is expected).
        """
        self._queue.close(self.settings.close_grace_s)
        if self._memory is not None:
            self._memory.close()
