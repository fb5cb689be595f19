"""The caller's own account."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import MeOut, MeUpdate, error_responses
from app.store.models import User
from app.store.users import set_train_on_context

router = APIRouter(tags=["users"], responses=error_responses(401, 429))


def _me(user: User) -> MeOut:
    return MeOut(
        id=user.id,
        name=user.name,
        role=str(user.role),
        train_on_context=bool(user.train_on_context),
    )


@router.get("/me", response_model=MeOut)
async def me(user: CurrentUser) -> MeOut:
    """Who the API key belongs to."""
    return _me(user)


@router.patch("/me", response_model=MeOut, responses=error_responses(422))
async def update_me(body: MeUpdate, user: CurrentUser, services: ServicesDep) -> MeOut:
    """Change the caller's own choices (today: whether training may see their sources)."""
    updated = await asyncio.to_thread(
        set_train_on_context, services.db, user.id, body.train_on_context
    )
    return _me(updated or user)
