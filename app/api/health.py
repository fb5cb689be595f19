"""``/health`` (open to all: load balancers and the UI's banner) and ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.active_adapter import ensure_active_adapter
from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import HealthOut, error_responses
from backend.errors import ModelServerError

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(services: ServicesDep, response: Response) -> HealthOut:
    """Model server, database and Qdrant; 503 when any is down. Reports a fallback or demo model."""
    model: dict[str, Any] = {"url": services.client.base_url, "model": services.base_model}
    try:
        info = await services.client.health()
        model |= {
            "ok": True,
            "demo_model": bool(info.get("demo_model", False)),
            "fallback": bool(info.get("fallback", False)),
            "model": info.get("model", services.base_model),
        }
    except ModelServerError as exc:
        model |= {"ok": False, "error": str(exc), "demo_model": False, "fallback": False}
    adapter = await ensure_active_adapter(services) if model["ok"] else None
    if adapter is not None:
        model["adapter"] = {"name": adapter.name, "served": adapter.served, "error": adapter.error}
    database = await asyncio.to_thread(services.db.ping)
    client = services.qdrant
    qdrant = client is not None
    if client is not None:
        try:
            await asyncio.to_thread(client.get_collections)
        except Exception:  # any client error means Qdrant is not usable right now
            qdrant = False
    # Chats name the active adapter: if the server lacks it, every chat fails.
    ok = model["ok"] and (adapter is None or adapter.served) and database and qdrant
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthOut(
        status="ok" if ok else "degraded",
        model_server=model,
        database=database,
        qdrant=qdrant,
        demo_model=model["demo_model"],
        fallback=model["fallback"],
        memory=services.memory is not None,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **error_responses(401, 429),
    },
)
async def metrics(user: CurrentUser) -> Response:
    """Prometheus metrics: requests, latency per stage, tokens, the online loop and canary."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
