"""The caller's own account."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CurrentUser
from app.api.schemas import MeOut, error_responses

router = APIRouter(tags=["users"], responses=error_responses(401, 429))


@router.get("/me", response_model=MeOut)
async def me(user: CurrentUser) -> MeOut:
    """Who the API key belongs to."""
    return MeOut(id=user.id, name=user.name, role=str(user.role))
