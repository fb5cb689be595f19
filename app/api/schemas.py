"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool

# Longest names the store's columns hold (documents.collection is VARCHAR(128), filename
# VARCHAR(512)): PostgreSQL refuses longer values, so the API says so first, as a 422.
MAX_COLLECTION_CHARS = 128
MAX_FILENAME_CHARS = 512


class ChatRequest(BaseModel):
    """A message to the agent."""

    message: str = Field(min_length=1, max_length=20_000, description="What the user asks.")
    thread_id: str | None = Field(None, description="Continue this thread; omit for a new one.")
    collection: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_COLLECTION_CHARS,
        description="Search only this collection.",
    )
    stream: StrictBool = Field(True, description="Server-sent events (true) or one JSON answer.")


class Source(BaseModel):
    """A passage the answer was given, numbered as in the prompt; ``cited`` if it cites it."""

    number: int
    chunk_id: str | None = None
    document_id: str | None = None
    title: str | None = None
    page: int | None = None
    heading: str | None = None
    text: str = ""
    score: float | None = None
    cited: bool = False
    origin: Literal["model", "attached"] | None = Field(
        None,
        description="Who cited it: the model wrote the marker, or the agent attached it "
        "to the sentence this passage supports best.",
    )


class ChatResponse(BaseModel):
    """A whole answer (``stream: false``)."""

    answer: str
    sources: list[Source]
    turn_id: str
    thread_id: str
    error: str | None = None


class FeedbackRequest(BaseModel):
    """A user's rating of an answer."""

    rating: Literal[1, -1] = Field(description="+1 thumbs up, -1 thumbs down.")
    comment: str | None = Field(None, max_length=5_000)
    corrected_answer: str | None = Field(None, max_length=20_000, description="A better answer.")


class FeedbackOut(BaseModel):
    """A stored rating."""

    turn_id: str
    rating: int
    comment: str | None
    corrected_answer: str | None
    created_at: datetime


class ThreadOut(BaseModel):
    """A thread in a list."""

    id: str
    title: str
    created_at: datetime
    updated_at: datetime


class TurnOut(BaseModel):
    """A turn of a thread as its owner sees it."""

    id: str
    question: str
    answer: str
    sources: list[Source]
    created_at: datetime
    adapter_version: str | None
    error: str | None
    rating: int | None = None


class ThreadDetail(ThreadOut):
    """A thread with its turns."""

    turns: list[TurnOut]


class DocumentOut(BaseModel):
    """A document and where it is in ingestion."""

    id: str
    title: str
    filename: str
    collection: str
    status: str
    error: str | None
    chunks: int
    created_at: datetime
    updated_at: datetime


class UploadResult(BaseModel):
    """What happened to each file of an upload."""

    documents: list[DocumentOut]
    rejected: list[dict[str, Any]] = Field(default_factory=list)


class MemoryOut(BaseModel):
    """Something the assistant remembers about the user."""

    id: str
    text: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AdapterOut(BaseModel):
    """An adapter version as the store holds it."""

    name: str
    version: int
    served_name: str
    status: str
    base_model: str
    path: str
    manifest: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None


class FeedbackStat(BaseModel):
    """Share of thumbs up for one day and adapter version."""

    day: str
    adapter_version: str | None
    up: int
    down: int
    share_up: float


class HealthOut(BaseModel):
    """``GET /health``: each dependency, and whether a fallback or demo model answers."""

    status: Literal["ok", "degraded"]
    model_server: dict[str, Any]
    database: bool
    qdrant: bool
    demo_model: bool
    fallback: bool
    memory: bool


class MeOut(BaseModel):
    """``GET /me``: who the API key belongs to, and what they let training use."""

    id: str
    name: str
    role: str
    train_on_context: bool = Field(
        description="Training prompts may keep this user's retrieved sources and memories."
    )


class MeUpdate(BaseModel):
    """``PATCH /me``: the caller's own choices."""

    train_on_context: StrictBool = Field(
        description=(
            "Let the shared adapter train on prompts that include your retrieved passages "
            "and memories (off by default; your questions and answers are used either way)."
        )
    )


class ServingOut(BaseModel):
    """``GET /admin/model``: the base model and the adapter now serving."""

    base_model: str
    adapter: AdapterOut | None


class NewUser(BaseModel):
    """A user to create."""

    name: str = Field(min_length=1, max_length=128)
    admin: StrictBool = False


class NewUserOut(BaseModel):
    """The created user; the API key appears in this response only."""

    id: str
    name: str
    role: str
    api_key: str


class TrustUpdate(BaseModel):
    """Whether a user's turns may be trained on."""

    trusted: StrictBool


class TrustOut(BaseModel):
    """A user's trust after an update."""

    id: str
    name: str
    trusted: bool


class ForgetAllOut(BaseModel):
    """``DELETE /memories``: how many memories were forgotten."""

    deleted: int


# ---- the OpenAI-compatible face of the agent (``/v1``) --------------------------------

AGENT_MODEL = "flywheel"
"""The name the agent goes by as an OpenAI model."""


class OpenAIMessage(BaseModel):
    """A chat message (text content only)."""

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text, joining text parts."""
        if isinstance(self.content, list):
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class OpenAIChatRequest(BaseModel):
    """The part of OpenAI's chat request the agent uses."""

    model: str = AGENT_MODEL
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: StrictBool = False
    user: str | None = None


class ModelCard(BaseModel):
    """One model in ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "flywheel"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorOut(BaseModel):
    """Every error: what went wrong and what to do about it."""

    detail: str | list[dict[str, Any]]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route may answer with."""
    meaning = {
        400: "The request is malformed.",
        401: "Missing or invalid API key.",
        403: "The API key is not an admin's.",
        404: "Not found, or not the caller's.",
        409: "It exists already.",
        413: "The request or a file is too large.",
        415: "Unsupported file type.",
        422: "A field is invalid.",
        429: "Too many requests; retry after the Retry-After header's seconds.",
        503: "A service the route needs is down.",
    }
    return {code: {"model": ErrorOut, "description": meaning[code]} for code in codes}
