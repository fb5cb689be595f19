"""What every route of the embedded server shares: its state and its error type.

A module of its own so that the OpenAI routes (:mod:`backend.routes`) and the runtime-LoRA
admin routes (:mod:`backend.lora_routes`) can both use it without importing each other.
Errors are answered in vLLM's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from backend.engine import Engine
from backend.openai_schema import ErrorInfo, ErrorResponse

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
