"""The agent's typed state.

Per-turn fields are reset by the first node of every turn;
``messages`` (the thread's history) persists in the checkpointer across turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from app.store.records import ChunkData, MemoryData, SourceData

Message = dict[str, str]


def append_messages(left: list[Message], right: list[Message]) -> list[Message]:
    """Reducer: the history grows by what a node returns (never rewritten)."""
    return [*left, *right]


@dataclass
class InputState:
    """What a caller gives the graph for one turn."""

    question: str = ""
    """The user's message, as typed."""
    messages: Annotated[list[Message], append_messages] = field(default_factory=list)
    """Earlier conversation the caller brings (OpenAI-style clients); appended to history."""


@dataclass
class State(InputState):
    """Everything one turn produces, stored whole at the end."""

    standalone_query: str = ""
    """The question rewritten to stand on its own, using the history."""
    route: str = "retrieve"
    """``retrieve`` (search the documents) or ``direct`` (small talk, memory only)."""
    sub_queries: list[str] = field(default_factory=list)
    """At most 3 searches for a multi-hop question; empty means the standalone query."""
    memories: list[MemoryData] = field(default_factory=list)
    """What the assistant remembers about the user that bears on the question."""
    chunks: list[ChunkData] = field(default_factory=list)
    """Retrieved passages, numbered from 1 in this order in the prompt."""
    evidence: float | None = None
    """How well the best passage bears on the question (``app.agent.evidence``)."""
    supported: bool = False
    """Whether the passages bear on the question enough to answer from them."""
    prompt: list[Message] = field(default_factory=list)
    """The exact messages sent to the model for the answer."""
    answer: str = ""
    """The answer text as streamed."""
    sources: list[SourceData] = field(default_factory=list)
    """The passages the answer cites, with their citation numbers."""
    usage: dict[str, int] = field(default_factory=dict)
    """Token counts of the answer call."""
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds per stage."""
    error: str | None = None
    """Why the turn failed, if it did; the turn is still stored."""
