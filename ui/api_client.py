"""The UI's only way to the API: HTTP calls with errors a person can act on.

Every failure, from a refused connection to a 503, becomes an :class:`ApiError` whose
message says what happened and what to do, so pages show it with ``st.error`` and never
a stack trace. The pages import nothing else from the project: the API is the contract.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

Json = dict[str, Any]

# What each status means to a person using the UI; the API's own detail follows it.
STATUS_HINTS = {
    401: "The API key was not accepted. Use the key printed by `make run`, "
    "or create one with `python -m app.users create NAME`.",
    403: "This needs an admin's API key.",
    404: "Not found: it may have been deleted, or it belongs to another user.",
    409: "Not possible right now.",
    413: "The file is too large for the API (its limit is MAX_UPLOAD_MB).",
    415: "That file type is not supported: upload PDF, Markdown, HTML or text files.",
    422: "The API refused the request as invalid.",
    503: "A service the API needs is not ready (the model server may still be starting). "
    "Try again in a moment.",
}


class ApiError(Exception):
    """An API call that failed, with a message meant for the person using the UI."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ChatEvent:
    """One server-sent event of a streamed answer: ``token``, ``sources``, ``done``, ``error``."""

    kind: str
    data: Json


def _detail(response: httpx.Response) -> str:
    """The API's explanation of an error response (FastAPI puts it in ``detail``)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # validation errors: a list of {loc, msg}
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg', '')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    return str(detail)


def error_for(response: httpx.Response) -> ApiError:
    """A readable :class:`ApiError` for an error response."""
    status = response.status_code
    detail = _detail(response)
    hint = STATUS_HINTS.get(status, f"The API answered with status {status}.")
    message = f"{hint} ({detail})" if detail else hint
    return ApiError(message, status)


class ApiClient:
    """Calls to the Flywheel API as one user (``api_key``), or anonymously for ``/health``."""

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        timeout_s: float = 30.0,
        chat_timeout_s: float = 600.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.chat_timeout_s = chat_timeout_s

    def _client(self, timeout: float | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout or self.timeout_s
        )

    def _unreachable(self, exc: httpx.TransportError) -> ApiError:
        if isinstance(exc, httpx.TimeoutException):
            return ApiError(
                f"The API at {self.base_url} did not answer in time. It may be busy; "
                "try again in a moment."
            )
        return ApiError(
            f"Cannot reach the Flywheel API at {self.base_url}. Is it running? Start the "
            "whole stack with `make run`, or point FLYWHEEL_API_URL at a running API."
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; the response if it succeeded, else a readable ApiError."""
        try:
            with self._client() as client:
                response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise error_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # --- open -------------------------------------------------------------------------

    def health(self) -> Json:
        """``/health``'s report, also when it says 503 (the body says what is down)."""
        try:
            with self._client() as client:
                response = client.get("/health")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code not in (200, 503):
            raise error_for(response)
        body: Json = response.json()
        return body

    # --- who am I -----------------------------------------------------------------------

    def is_admin(self) -> bool:
        """Whether the key is an admin's (the API has no "who am I" route: ask an admin one).

        Raises:
            ApiError: the key is not accepted at all (401), or the API cannot be reached.
        """
        try:
            self._request("GET", "/admin/model")
        except ApiError as exc:
            if exc.status == 403:
                return False
            raise
        return True

    # --- chat -----------------------------------------------------------------------------

    def chat_stream(
        self, message: str, *, thread_id: str | None = None, collection: str | None = None
    ) -> Iterator[ChatEvent]:
        """Ask the agent; yields its events as they arrive (tokens first, ``done`` last)."""
        body: Json = {"message": message, "stream": True}
        if thread_id:
            body["thread_id"] = thread_id
        if collection:
            body["collection"] = collection
        try:
            with (
                self._client(self.chat_timeout_s) as client,
                client.stream("POST", "/chat", json=body) as response,
            ):
                if response.is_error:
                    response.read()
                    raise error_for(response)
                yield from _read_events(response)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def threads(self) -> list[Json]:
        """The user's threads, newest activity first."""
        result: list[Json] = self._json("GET", "/threads")
        return result

    def thread(self, thread_id: str) -> Json:
        """A thread with its turns."""
        result: Json = self._json("GET", f"/threads/{thread_id}")
        return result

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread and its turns."""
        self._request("DELETE", f"/threads/{thread_id}")

    def feedback(
        self,
        turn_id: str,
        rating: int,
        *,
        comment: str | None = None,
        corrected_answer: str | None = None,
    ) -> Json:
        """Rate an answer: +1 thumbs up, -1 thumbs down, with an optional comment and fix."""
        body: Json = {"rating": rating}
        if comment:
            body["comment"] = comment
        if corrected_answer:
            body["corrected_answer"] = corrected_answer
        result: Json = self._json("POST", f"/turns/{turn_id}/feedback", json=body)
        return result

    def unrate(self, turn_id: str) -> None:
        """Take back the rating of an answer."""
        self._request("DELETE", f"/turns/{turn_id}/feedback")

    # --- documents ------------------------------------------------------------------------

    def upload(self, files: Sequence[tuple[str, bytes]], collection: str | None = None) -> Json:
        """Upload files (name, bytes); ``{documents, rejected}``, ingested in the background."""
        data = {"collection": collection} if collection else {}
        parts = [("files", (name, content)) for name, content in files]
        result: Json = self._json("POST", "/documents", files=parts, data=data)
        return result

    def documents(self, collection: str | None = None) -> list[Json]:
        """The user's documents with their ingestion status."""
        params = {"collection": collection} if collection else {}
        result: list[Json] = self._json("GET", "/documents", params=params)
        return result

    def delete_document(self, document_id: str) -> None:
        """Delete a document and its chunks."""
        self._request("DELETE", f"/documents/{document_id}")

    # --- memory ---------------------------------------------------------------------------

    def memories(self) -> list[Json]:
        """What the assistant remembers about the user."""
        result: list[Json] = self._json("GET", "/memories")
        return result

    def forget(self, memory_id: str) -> None:
        """Forget one memory."""
        self._request("DELETE", f"/memories/{memory_id}")

    def forget_all(self) -> int:
        """Forget everything about the user; how many memories went."""
        return int(self._json("DELETE", "/memories")["deleted"])

    # --- admin ----------------------------------------------------------------------------

    def serving(self) -> Json:
        """The base model and the adapter now serving."""
        result: Json = self._json("GET", "/admin/model")
        return result

    def adapters(self) -> list[Json]:
        """Every adapter version with its status and manifest."""
        result: list[Json] = self._json("GET", "/admin/adapters")
        return result

    def feedback_stats(self) -> list[Json]:
        """Thumbs up and down per day and adapter version."""
        result: list[Json] = self._json("GET", "/admin/feedback")
        return result

    # --- the online loop (admin) ------------------------------------------------------------

    def loop(self) -> Json:
        """The online loop's state, the canary trial with live figures, recent decisions."""
        result: Json = self._json("GET", "/admin/loop")
        return result

    def pause_loop(self, reason: str) -> Json:
        """Stop the loop from starting rounds; the loop's new state."""
        result: Json = self._json("POST", "/admin/loop/pause", json={"reason": reason})
        return result

    def resume_loop(self) -> Json:
        """Let the loop start rounds again; its new state."""
        result: Json = self._json("POST", "/admin/loop/resume")
        return result

    def train_now(self) -> Json:
        """Ask the running loop for a round now (refused with 409 while it is paused)."""
        result: Json = self._json("POST", "/admin/loop/train-now")
        return result

    def promote_canary(self) -> Json:
        """Serve the version on canary trial to everyone (409 when none is on trial)."""
        result: Json = self._json("POST", "/admin/canary/promote")
        return result

    def rollback_canary(self) -> Json:
        """Stop the canary trial: the version is rejected (409 when none is on trial)."""
        result: Json = self._json("POST", "/admin/canary/rollback")
        return result


def _read_events(response: httpx.Response) -> Iterator[ChatEvent]:
    """Server-sent events of a streamed response, as a browser's EventSource reads them."""
    kind, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield ChatEvent(kind, json.loads("\n".join(data)))
            kind, data = "message", []
    if data:
        yield ChatEvent(kind, json.loads("\n".join(data)))
