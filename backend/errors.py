"""Typed errors of the model-server client, so callers can react without parsing messages.

The API turns :class:`ModelServerUnavailable` into a 503 and the others into 4xx/5xx of
its own; the trainer retries on unavailability and gives up on a bad request.
"""

from __future__ import annotations


class ModelServerError(Exception):
    """Any failure talking to the model server (vLLM or the embedded one)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class ModelServerUnavailable(ModelServerError):
    """The server cannot be reached: connection refused, timed out, or answered 503."""


class BadRequest(ModelServerError):
    """The server refused the request as malformed or impossible (HTTP 400/422)."""


class ModelNotFound(ModelServerError):
    """The requested model (base or adapter name) is not served (HTTP 404)."""


class AdapterNotFound(ModelNotFound):
    """A LoRA adapter name or path the server does not know (HTTP 404 on adapter admin)."""
