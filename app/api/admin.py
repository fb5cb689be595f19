"""Admin routes: adapters, feedback over time, users (403 for non-admins)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status

from app.api.deps import AdminUser, ServicesDep
from app.api.schemas import (
    AdapterOut,
    FeedbackStat,
    NewUser,
    NewUserOut,
    ServingOut,
    TrustOut,
    TrustUpdate,
    error_responses,
)
from app.store.adapters import active_adapter, list_adapters
from app.store.feedback import daily_ratings
from app.store.users import set_trusted
from app.users import UserExists, create_user, revoke_key, rotate_key

router = APIRouter(
    prefix="/admin", tags=["admin"], responses=error_responses(401, 403, 404, 409, 422, 429)
)


def _adapter(a: Any) -> AdapterOut:
    return AdapterOut(
        name=a.name,
        version=a.version,
        served_name=a.served_name,
        status=str(a.status),
        base_model=a.base_model,
        path=a.path,
        manifest=a.manifest,
        created_at=a.created_at,
        promoted_at=a.promoted_at,
    )


@router.get("/model", response_model=ServingOut)
async def serving(admin: AdminUser, services: ServicesDep) -> ServingOut:
    """The base model and the adapter now serving."""
    active = await asyncio.to_thread(active_adapter, services.db)
    return ServingOut(base_model=services.base_model, adapter=_adapter(active) if active else None)


@router.get("/adapters", response_model=list[AdapterOut])
async def adapters(admin: AdminUser, services: ServicesDep) -> list[AdapterOut]:
    """Every adapter version with its status and metrics."""
    return [_adapter(a) for a in await asyncio.to_thread(list_adapters, services.db)]


def _feedback_stats(services: Any) -> list[FeedbackStat]:
    counts = daily_ratings(services.db)
    return [
        FeedbackStat(day=day, adapter_version=adapter, up=up, down=down, share_up=up / (up + down))
        for (day, adapter), (up, down) in sorted(
            counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        )
    ]


@router.get("/feedback", response_model=list[FeedbackStat])
async def feedback_stats(admin: AdminUser, services: ServicesDep) -> list[FeedbackStat]:
    """Share of thumbs up per day and adapter version."""
    return await asyncio.to_thread(_feedback_stats, services)


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=NewUserOut)
async def new_user(body: NewUser, admin: AdminUser, services: ServicesDep) -> NewUserOut:
    """Create a user; the API key is in this response only."""
    try:
        user, key = await asyncio.to_thread(create_user, services.db, body.name, admin=body.admin)
    except UserExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return NewUserOut(id=user.id, name=user.name, role=str(user.role), api_key=key)


@router.patch("/users/{user_id}", response_model=TrustOut)
async def set_trust(
    user_id: str, body: TrustUpdate, admin: AdminUser, services: ServicesDep
) -> TrustOut:
    """Mark a user trusted or untrusted (untrusted users' turns are not trained on)."""
    user = await asyncio.to_thread(set_trusted, services.db, user_id, body.trusted)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id!r}")
    return TrustOut(id=user.id, name=user.name, trusted=user.trusted)


@router.post("/users/{user_id}/rotate", response_model=NewUserOut)
async def rotate(user_id: str, admin: AdminUser, services: ServicesDep) -> NewUserOut:
    """Give a user a new API key (in this response only); the old key stops working now."""
    rotated = await asyncio.to_thread(rotate_key, services.db, user_id)
    if rotated is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id!r}")
    user, key = rotated
    return NewUserOut(id=user.id, name=user.name, role=str(user.role), api_key=key)


@router.post("/users/{user_id}/revoke", status_code=status.HTTP_204_NO_CONTENT)
async def revoke(user_id: str, admin: AdminUser, services: ServicesDep) -> Response:
    """Make a user's API key stop working now (rotate gives them a new one)."""
    if await asyncio.to_thread(revoke_key, services.db, user_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
