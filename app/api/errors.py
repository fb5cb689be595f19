"""The agent's own errors as HTTP answers, in FastAPI's ``{"detail": ...}`` shape."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from app.turns import ThreadNotFound, TurnFailed


def add_turn_error_handlers(app: FastAPI) -> None:
    """404 for a thread that is not the caller's; a failed turn's own status."""

    async def thread_not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    async def turn_failed(request: Request, exc: Exception) -> JSONResponse:
        code = exc.status if isinstance(exc, TurnFailed) else 500
        return JSONResponse({"detail": str(exc)}, status_code=code)

    app.add_exception_handler(ThreadNotFound, thread_not_found)
    app.add_exception_handler(TurnFailed, turn_failed)
