"""Admin routes: adapters, feedback over time, users (403 for non-admins)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.api.deps import AdminUser, ServicesDep
from app.api.schemas import AdapterOut, FeedbackStat
from app.store import Feedback, Turn, User
from app.store.adapters import active_adapter, list_adapters
from app.users import UserExists, create_user

router = APIRouter(prefix="/admin", tags=["admin"])


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


@router.get("/model")
async def serving(admin: AdminUser, services: ServicesDep) -> dict[str, Any]:
    """The base model and the adapter now serving."""
    active = await asyncio.to_thread(active_adapter, services.db)
    return {
        "base_model": services.base_model,
        "adapter": _adapter(active).model_dump(mode="json") if active else None,
    }


@router.get("/adapters", response_model=list[AdapterOut])
async def adapters(admin: AdminUser, services: ServicesDep) -> list[AdapterOut]:
    """Every adapter version with its status and metrics."""
    return [_adapter(a) for a in await asyncio.to_thread(list_adapters, services.db)]


def _feedback_stats(services: Any) -> list[FeedbackStat]:
    counts: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0])
    with services.db.session() as session:
        rows = session.execute(
            select(Feedback.created_at, Feedback.rating, Turn.adapter_version).join(
                Turn, Turn.id == Feedback.turn_id
            )
        )
        for created, rating, adapter in rows:
            counts[(created.date().isoformat(), adapter)][0 if rating > 0 else 1] += 1
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


class NewUser(BaseModel):
    """A user to create."""

    name: str = Field(min_length=1, max_length=128)
    admin: bool = False


class TrustUpdate(BaseModel):
    """Whether a user's turns may be trained on."""

    trusted: bool


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def new_user(body: NewUser, admin: AdminUser, services: ServicesDep) -> dict[str, Any]:
    """Create a user; the API key is in this response only."""
    try:
        user, key = await asyncio.to_thread(create_user, services.db, body.name, admin=body.admin)
    except UserExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return {"id": user.id, "name": user.name, "role": str(user.role), "api_key": key}


@router.patch("/users/{user_id}")
async def set_trust(
    user_id: str, body: TrustUpdate, admin: AdminUser, services: ServicesDep
) -> dict[str, Any]:
    """Mark a user trusted or untrusted (untrusted users' turns are not trained on)."""

    def update() -> User | None:
        with services.db.session() as session:
            user = session.get(User, user_id)
            if user is not None:
                user.trusted = body.trusted
            return user

    user = await asyncio.to_thread(update)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id!r}")
    return {"id": user.id, "name": user.name, "trusted": user.trusted}
