"""What every route of the embedded server shares: its state and its error type.

A module of its own so that the OpenAI routes (:mod:`backend.routes`) and the runtime-LoRA
admin routes (:mod:`backend.lora_routes`) can both use it without importing each other.
Errors are answered in vLLM's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

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
