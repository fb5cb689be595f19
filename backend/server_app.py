"""The embedded model server's FastAPI app: routes, vLLM-shaped errors, the optional API key.

Built by :func:`create_app` around an engine that is started and stopped by the app's
lifespan, so the same app object serves in-process tests and ``python -m backend.server``.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from backend.completion_routes import router as completion_router
from backend.engine import Engine
from backend.lora_routes import admin_router
from backend.routes import router
from backend.server_state import APIError, ServerState, error_response


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc.message, exc.status_code)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "malformed JSON")
            parts.append(f"the body is not valid JSON ({reason} at character {err['loc'][-1]})")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return error_response("Invalid request: " + "; ".join(parts), 400)


def create_app(
    engine: Engine,
    *,
    adapters_root: Path,
    max_lora_rank: int,
    runtime_lora: bool,
    api_key: str | None = None,
) -> FastAPI:
    """The FastAPI app around a (not yet started) engine; the lifespan starts and stops it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="Flywheel embedded model server", lifespan=lifespan)
    app.state.server = ServerState(
        engine=engine, adapters_root=adapters_root, max_lora_rank=max_lora_rank
    )
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(router)
    app.include_router(completion_router)
    if runtime_lora:
        app.include_router(admin_router)
    if api_key:
        require_api_key(app, api_key)
    return app


def require_api_key(app: FastAPI, api_key: str) -> None:
    """VLLM's ``--api-key``: every /v1 route needs ``Authorization: Bearer <key>``.

    ``/health`` and ``/metrics`` stay open, as in vLLM, so probes need no secret.
    """
    expected = f"Bearer {api_key}".encode()

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if request.method != "OPTIONS" and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return await call_next(request)
