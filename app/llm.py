"""The agent's view of the served model, over the backend's one client.

It turns the client's stream into :class:`~app.agent.context.Delta` events and makes sure
that whatever breaks mid-stream (a killed server, a dropped connection) arrives as a
typed :class:`~backend.errors.ModelServerError`, which the agent records on the turn.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import openai

from app.agent.context import Delta
from backend.client import AsyncModelClient
from backend.errors import ModelServerError, ModelServerUnavailable

_OPTIONS = {
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "min_tokens",
}


def _options(params: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in params.items() if k in _OPTIONS}
    response_format = params.get("response_format") or {}
    if response_format.get("type") == "json_object":
        options["json_object"] = True
    if response_format.get("type") == "json_schema":
        options["json_schema"] = response_format["json_schema"]["schema"]
    return options


class ServedModel:
    """Chat completions from the model server, whole or streamed."""

    def __init__(self, client: AsyncModelClient) -> None:
        self.client = client

    async def complete(self, messages: list[dict[str, str]], *, model: str, **params: Any) -> str:
        """One whole answer."""
        result = await self.client.chat(messages, model=model, **_options(params))
        return result.text

    async def stream(
        self, messages: list[dict[str, str]], *, model: str, **params: Any
    ) -> AsyncGenerator[Delta, None]:
        """Text pieces as they come, then the usage."""
        stream = self.client.stream_chat(messages, model=model, **_options(params))
        try:
            async for text in stream:
                yield Delta(text=text)
        except ModelServerError:
            raise
        except (httpx.HTTPError, openai.APIError) as exc:
            raise ModelServerUnavailable(
                f"the model server stopped mid-answer ({type(exc).__name__}: {exc})"
            ) from exc
        if stream.usage is not None:
            yield Delta(
                prompt_tokens=stream.usage.prompt_tokens,
                completion_tokens=stream.usage.completion_tokens,
            )
