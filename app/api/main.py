"""The FastAPI application: routers, the services' life cycle, request metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from app import metrics
from app.api import admin, chat, documents, health, memories, openai_compat, threads
from app.services import open_services
from app.settings import AppSettings, get_settings


def create_app(settings: AppSettings | None = None) -> FastAPI:
    """The API, opening its services when it starts and closing them when it stops."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            yield

    app = FastAPI(
        title="Flywheel",
        summary="A self-improving RAG chat agent: documents, memory, citations, feedback.",
        version="0.1.0",
        lifespan=lifespan,
    )
    for module in (chat, openai_compat, threads, documents, memories, health, admin):
        app.include_router(module.router)

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        metrics.REQUEST_SECONDS.labels(request.method, path).observe(time.perf_counter() - start)
        return response

    return app
