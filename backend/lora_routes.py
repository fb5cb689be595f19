"""vLLM's runtime LoRA admin routes: load and unload adapters in the running server.

Mounted only when runtime LoRA updating is enabled (as vLLM does with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``); messages and status codes are vLLM's, so the trainer
drives either server the same way. Every load is a new :class:`LoadedAdapter`, published
under its name only once its weights are in the model.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from backend.adapters import AdapterError, LoadedAdapter, validate_adapter, validate_adapter_name
from backend.openai_schema import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest
from backend.server_state import APIError, StateDep, documented_errors

logger = logging.getLogger(__name__)

admin_router = APIRouter(responses=documented_errors(400, 401, 404))


# Success is vLLM's plain-text sentence; errors are JSON like every other route's.
_PLAIN_OK: dict[int | str, dict[str, Any]] = {
    200: {"description": "Done", "content": {"text/plain": {"schema": {"type": "string"}}}}
}


@admin_router.post("/v1/load_lora_adapter", response_model=None, responses=_PLAIN_OK)
async def load_lora_adapter(body: LoadLoRAAdapterRequest, state: StateDep) -> PlainTextResponse:
    """Load (or, with ``load_inplace``, replace) a LoRA adapter under ``lora_name``."""
    if not body.lora_name or not body.lora_path:
        raise APIError("Both 'lora_name' and 'lora_path' must be provided.", 400)
    engine = state.engine
    name = body.lora_name
    try:
        validate_adapter_name(name)
    except AdapterError as exc:
        raise APIError(exc.message, exc.status_code) from exc
    if name in engine.loaded.request_names:
        raise APIError(f"'{name}' is the base model's name; choose another adapter name.", 400)
    async with state.admin_lock:
        if engine.registry.get(name) is not None and not body.load_inplace:
            raise APIError(
                f"The lora adapter '{name}' has already been loaded. If you want to load the "
                "adapter in place, set 'load_inplace' to True.",
                400,
            )
        try:
            spec = await asyncio.to_thread(
                validate_adapter,
                body.lora_path,
                state.adapters_root,
                state.max_lora_rank,
                engine.loaded.base_names,
            )
            version = LoadedAdapter(name=name, spec=spec)
            await engine.load_adapter(version)
        except AdapterError as exc:
            raise APIError(exc.message, exc.status_code) from exc
        engine.registry.publish(version)
    logger.info("LoRA adapter '%s' loaded from %s (%s)", name, spec.path, version.uid)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


@admin_router.post("/v1/unload_lora_adapter", response_model=None, responses=_PLAIN_OK)
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, state: StateDep) -> PlainTextResponse:
    """Stop serving ``lora_name``; requests already running on it finish on it."""
    if not body.lora_name:
        raise APIError("'lora_name' needs to be provided to unload a LoRA adapter.", 400)
    async with state.admin_lock:
        if state.engine.registry.remove(body.lora_name) is None:
            raise APIError(f"The lora adapter '{body.lora_name}' cannot be found.", 404)
    state.engine.wake()
    logger.info("LoRA adapter '%s' unloaded", body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
