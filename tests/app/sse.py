"""Reading server-sent events the way a browser's EventSource would."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx


def read_events(response: httpx.Response) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of a streamed response, in order."""
    return parse_events(response.iter_lines())


def parse_events(lines: Iterable[str]) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs from the lines of an event stream."""
    events: list[tuple[str, Any]] = []
    kind, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            events.append((kind, json.loads("\n".join(data))))
            kind, data = "message", []
    return events


def chat_stream(
    client: httpx.Client, url: str, key: str, message: str, **body: Any
) -> list[tuple[str, Any]]:
    """Send a chat message and read every event of the answer."""
    with client.stream(
        "POST",
        f"{url}/chat",
        json={"message": message, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_events(response)
