"""What every route of the embedded server shares: its state and its error type.

A module of its own so that the OpenAI routes (:mod:`backend.routes`) and the runtime-LoRA
admin routes (:mod:`backend.lora_routes`) can both use it without importing each other.
Errors are answered in vLLM's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse

from backend.engine import Engine
from backend.openai_schema import ErrorInfo, ErrorResponse

logger = logging.getLogger(__name__)
T = TypeVar("T")
# How often a non-streamed request checks that its client is still there.
_DISCONNECT_POLL_S = 0.5
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


class APIError(Exception):
    """An error answered as vLLM's ``ErrorResponse``."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def error_response(message: str, status_code: int) -> JSONResponse:
    """The JSON body vLLM sends for an error."""
    body = ErrorResponse(
        error=ErrorInfo(
            message=message, type=_ERROR_TYPES.get(status_code, "Error"), code=status_code
        )
    )
    return JSONResponse(body.model_dump(), status_code=status_code)


def documented_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route answers, in vLLM's shapes."""
    text = {
        400: "Invalid request: the message says what to change",
        401: "Missing or wrong API key (only when the server runs with --api-key)",
        404: "Unknown model, adapter or path",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        if code == 401:  # vLLM's own body for a bad key: {"error": "Unauthorized"}
            schema = {"type": "object", "properties": {"error": {"type": "string"}}}
            out[code] = {
                "description": text[code],
                "content": {"application/json": {"schema": schema}},
            }
        else:
            out[code] = {"model": ErrorResponse, "description": text[code]}
    return out


@dataclass
class ServerState:
    """What the routes share: the engine and the adapter rules."""

    engine: Engine
    adapters_root: Path
    max_lora_rank: int
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


StateDep = Annotated[ServerState, Depends(_state)]


async def unless_client_gone(request: Request, work: Coroutine[Any, Any, T]) -> T | Response:
    """Await ``work`` (a whole, non-streamed answer) unless the client hangs up first.

    A client that timed out or closed the connection gets nothing, so generating on is
    wasted CPU: the work is cancelled, which cancels its requests in the engine.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                logger.info("client went away; generation for it stopped")
                return Response(status_code=499)  # nginx's "client closed request"
    finally:
        if not task.done():
            task.cancel()
