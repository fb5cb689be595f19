"""The API process's long-lived services, opened once at start and closed at shutdown.

One Qdrant client serves both the retriever and mem0 (local mode allows one client per
storage path). The agent is compiled once with a per-thread checkpointer that follows
the database: SQLite beside it by default, PostgreSQL when the store is on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.active_adapter import ensure_active_adapter, watch_active_adapter
from app.agent.context import Context
from app.agent.graph import compile_graph
from app.api.rate_limits import RateLimits
from app.canary import pick_arm
from app.llm import ServedModel
from app.loop_metrics import watch_store
from app.settings import AppSettings
from app.store import Database, open_database
from app.store.documents import fail_interrupted
from app.store.loop import serving_versions
from app.store.threads import save_turn
from backend.client import AsyncModelClient

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph
    from qdrant_client import QdrantClient

    from backend.settings import BackendSettings
    from memory import UserMemory
    from retriever import Retriever

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request handler needs."""

    settings: AppSettings
    db: Database
    client: AsyncModelClient
    llm: ServedModel
    base_model: str
    graph: CompiledStateGraph[Any, Any, Any, Any]
    checkpointer: BaseCheckpointSaver[Any]
    retriever: Retriever | None = None
    memory: UserMemory | None = None
    qdrant: QdrantClient | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    limits: RateLimits | None = None
    """Per-key and per-address request limits (None: unlimited)."""
    pinned_model: str | None = None
    """Answer with this served name instead of the active adapter ("" = the base model);
    set by the evaluation to compare a version against the base."""

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def context(
        self, *, user_id: str, thread_id: str, turn_id: str, collection: str | None
    ) -> Context:
        """The agent's context for one turn, with the adapter now active."""
        arm: str | None = None
        if self.pinned_model is not None:
            served = self.pinned_model or None
        else:
            served, arm = pick_arm(user_id, *serving_versions(self.db))
        s = self.settings
        return Context(
            user_id=user_id,
            thread_id=thread_id,
            turn_id=turn_id,
            llm=self.llm,
            model=served or self.base_model,
            base_model=self.base_model,
            adapter_version=served,
            arm=arm,
            retriever=self.retriever,
            memory=self.memory,
            collection=collection,
            top_k=s.top_k,
            memory_k=s.memory_k,
            history_messages=s.history_messages,
            min_relevance=s.min_relevance,
            min_evidence=s.min_evidence,
            passage_check=s.passage_check,
            decline_ungrounded=s.decline_ungrounded,
            retry_unsupported=s.retry_unsupported,
            sampling=s.sampling(),
            save_turn=lambda record: save_turn(self.db, record),
        )

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait a little for background work (memory writes, ingestion) to finish."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)


async def _served_base_model(client: AsyncModelClient, configured: str, wait_s: float) -> str:
    """The base model's name as the server lists it.

    It may have fallen back to the demo model; the configured name is used when the
    server is not up within ``wait_s``.
    """
    from backend.errors import ModelServerError

    try:
        if wait_s > 0:
            await client.wait_until_ready(timeout=wait_s)
        models = await client.list_models()
    except ModelServerError as exc:
        logger.warning("model server not ready (%s); chats answer 503 until it is", exc)
        return configured
    bases = [m.id for m in models if m.parent is None]
    return bases[0] if bases else configured


async def _checkpointer(stack: AsyncExitStack, settings: AppSettings, db: Database) -> Any:
    if db.is_postgres:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        saver = await stack.enter_async_context(AsyncPostgresSaver.from_conn_string(url))
        await saver.setup()
        return saver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return await stack.enter_async_context(
        AsyncSqliteSaver.from_conn_string(settings.checkpoints_path)
    )


def _open_search(
    settings: AppSettings, backend: BackendSettings, base_model: str
) -> tuple[Any, Any, Any]:
    """Qdrant client, retriever and memory (blocking: models load here)."""
    from memory import UserMemory
    from memory.settings import get_settings as memory_settings
    from retriever import Retriever
    from retriever.qdrant import open_client
    from retriever.settings import get_settings as retriever_settings

    if settings.torch_threads:
        import torch

        # The API embeds one short query at a time: more threads barely help such small
        # ops and fight the model server (often on the same cores) for the CPU.
        torch.set_num_threads(settings.torch_threads)
    r_settings = retriever_settings()
    qdrant = open_client(r_settings)
    retriever = Retriever(qdrant, r_settings)
    m_settings = memory_settings().for_server(backend.base_url, base_model, backend.vllm_api_key)
    memory = UserMemory(m_settings, qdrant) if m_settings.enabled else None
    if memory is not None:
        memory.warm_up()  # load mem0 and its embedder now, not on the first chat
    return qdrant, retriever, memory


@asynccontextmanager
async def open_services(settings: AppSettings) -> AsyncIterator[Services]:
    """Open every service the API needs; close them all on exit."""
    from backend.settings import get_settings as backend_settings

    async with AsyncExitStack() as stack:
        db = open_database(settings.db_url)
        stack.callback(db.close)
        watch_store(db)  # /metrics reports the online loop from this store
        if interrupted := await asyncio.to_thread(fail_interrupted, db):
            logger.warning(
                "%d document(s) were ingesting when the API stopped: failed", interrupted
            )
        backend = backend_settings()
        client = AsyncModelClient(backend.base_url, api_key=backend.vllm_api_key or "")
        stack.push_async_callback(client.aclose)
        base_model = await _served_base_model(client, backend.model_name, settings.model_wait_s)
        qdrant, retriever, memory = await asyncio.to_thread(
            _open_search, settings, backend, base_model
        )
        if qdrant is not None:
            stack.callback(qdrant.close)
        if memory is not None:
            stack.callback(memory.close)  # drops queued extractions; short grace for one running
        checkpointer = await _checkpointer(stack, settings, db)
        services = Services(
            settings=settings,
            db=db,
            client=client,
            llm=ServedModel(client),
            base_model=base_model,
            graph=compile_graph(checkpointer),
            checkpointer=checkpointer,
            retriever=retriever,
            memory=memory,
            qdrant=qdrant,
            limits=RateLimits(settings),
        )
        await ensure_active_adapter(services)  # the model server may have restarted
        watcher = asyncio.get_running_loop().create_task(
            watch_active_adapter(services, settings.adapter_check_s)
        )
        try:
            yield services
        finally:
            watcher.cancel()
            await services.drain()
