"""The FastAPI application: routers, the services' life cycle, request metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.api import (
    admin,
    chat,
    documents,
    feedback,
    health,
    loop,
    memories,
    openai_compat,
    threads,
    users,
)
from app.api.body_limit import BodyLimit
from app.api.errors import add_turn_error_handlers
from app.services import open_services
from app.settings import AppSettings, get_settings


class RequestMetrics:
    """Counts and times every request.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs milliseconds per
    request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then record its route, status and latency."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status_code = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            metrics.REQUESTS.labels(method, path, str(status_code)).inc()
            metrics.REQUEST_SECONDS.labels(method, path).observe(time.perf_counter() - start)


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
    for module in (
        chat,
        openai_compat,
        threads,
        feedback,
        users,
        documents,
        memories,
        health,
        admin,
        loop,
    ):
        app.include_router(module.router)
    add_turn_error_handlers(app)

    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(RequestMetrics)
    return app
