"""Keeping the model server in step with the store's active adapter.

The store says which adapter version serves; the model server keeps loaded adapters only
in memory. After a model-server restart every chat would name a model the server no
longer has (404), while the store still says "active". So the API checks on start, on
every ``/health`` and every few seconds in the background, and loads the active version
again from its path when it is missing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.store.loop import serving_versions
from backend.errors import ModelServerError

if TYPE_CHECKING:
    from app.services import Services

logger = logging.getLogger(__name__)


@dataclass
class AdapterState:
    """The active adapter (None: the base model serves) and whether the server has it."""

    name: str | None
    served: bool
    error: str | None = None


async def ensure_active_adapter(services: Services) -> AdapterState:
    """Load the store's active adapter (and a canary on trial) into the server if missing."""
    active, canary = await asyncio.to_thread(serving_versions, services.db)
    if canary is not None:
        await _ensure_loaded(services, canary.served_name, canary.path)
    if active is None:
        return AdapterState(None, True)
    return await _ensure_loaded(services, active.served_name, active.path)


async def _ensure_loaded(services: Services, name: str, path: str) -> AdapterState:
    try:
        if name in {m.id for m in await services.client.list_models()}:
            return AdapterState(name, True)
        await services.client.load_adapter(name, path)
    except ModelServerError as exc:
        logger.error("the adapter %s is not served and could not be loaded: %s", name, exc)
        return AdapterState(name, False, str(exc))
    logger.warning("the model server had lost the adapter %s: loaded it again", name)
    return AdapterState(name, True)


async def watch_active_adapter(services: Services, interval_s: float) -> None:
    """Run :func:`ensure_active_adapter` every ``interval_s`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await ensure_active_adapter(services)
