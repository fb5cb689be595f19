"""What the assistant remembers about the caller: list, forget one, forget all."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, status

from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import ForgetAllOut, MemoryOut, error_responses

router = APIRouter(tags=["memories"], responses=error_responses(401, 404, 429))


@router.get("/memories", response_model=list[MemoryOut])
async def list_memories(user: CurrentUser, services: ServicesDep) -> list[MemoryOut]:
    """Everything remembered about the caller (empty when memory is off)."""
    if services.memory is None:
        return []
    items = await asyncio.to_thread(services.memory.list, user.id)
    return [MemoryOut.model_validate(i, from_attributes=True) for i in items]


@router.delete("/memories/{memory_id}", status_code=status.HTTP_204_NO_CONTENT)
async def forget(memory_id: str, user: CurrentUser, services: ServicesDep) -> None:
    """Forget one memory."""
    if services.memory is None or not await asyncio.to_thread(
        services.memory.forget, user.id, memory_id
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no memory {memory_id!r}")


@router.delete("/memories", response_model=ForgetAllOut)
async def forget_all(user: CurrentUser, services: ServicesDep) -> ForgetAllOut:
    """Forget everything about the caller."""
    if services.memory is None:
        return ForgetAllOut(deleted=0)
    return ForgetAllOut(deleted=await asyncio.to_thread(services.memory.forget_all, user.id))
