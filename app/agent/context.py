"""Per-run context: who is asking, where, and the services the nodes use.

The services are given as small protocols, so the graph depends on behaviour rather than
on the concrete retriever, memory and model client (tests and benchmarks pass others).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.store.records import TurnRecord


class Searcher(Protocol):
    """Hybrid search over a user's documents."""

    def search(
        self, query: str, *, owner: str | None, collection: str | None = None, k: int = 5
    ) -> list[Any]:
        """Ranked chunks for ``query`` that ``owner`` may see."""
        ...


class Memories(Protocol):
    """Long-term user memory."""

    def recall(self, user_id: str, query: str, k: int = 5) -> list[Any]:
        """Memories of ``user_id`` relevant to ``query``."""
        ...

    def remember_in_background(
        self, user_id: str, messages: list[dict[str, str]], thread_id: str | None = None
    ) -> Any:
        """Queue extracting and storing memories from a finished turn; returns at once."""
        ...


@dataclass
class Delta:
    """A piece of a streamed answer, or the final usage when ``text`` is empty."""

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatModel(Protocol):
    """The served chat model, reached over the OpenAI-compatible API."""

    async def complete(self, messages: list[dict[str, str]], *, model: str, **params: Any) -> str:
        """One whole answer (used for small structured calls)."""
        ...

    def stream(
        self, messages: list[dict[str, str]], *, model: str, **params: Any
    ) -> AsyncGenerator[Delta, None]:
        """The answer as it is generated, then one :class:`Delta` with the usage."""
        ...


@dataclass
class Context:
    """One run of the graph: a turn of one user in one thread."""

    user_id: str
    """Owner filter for retrieval and the memory scope."""
    thread_id: str
    """The conversation this turn belongs to."""
    turn_id: str
    """Id the stored turn gets (known before the run, so streams can name it)."""
    llm: ChatModel
    """The model server client."""
    model: str
    """Name sent as ``model``: the active adapter's served name, or the base model."""
    base_model: str
    """The base model's name, stored with the turn."""
    adapter_version: str | None = None
    """The active adapter's served name, or None when the base model answers."""
    arm: str | None = None
    """``canary`` or ``control`` while a canary version is on trial, else None."""
    retriever: Searcher | None = None
    """Document search; None means no documents can be searched."""
    memory: Memories | None = None
    """Long-term memory; None means memory is off."""
    collection: str | None = None
    """Collection filter for retrieval; None searches all the user's collections."""
    top_k: int = 5
    """How many sources the answer may draw on."""
    memory_k: int = 5
    """How many memories are recalled."""
    history_messages: int = 6
    """How many earlier messages of the thread go into prompts."""
    min_relevance: float = 0.0
    """Chunks scoring below this are dropped."""
    min_evidence: float = 0.0
    """Below this evidence the agent declines instead of answering (0 never declines)."""
    passage_check: bool = False
    """Ask the model whether the best passage answers the question before answering."""
    decline_ungrounded: bool = False
    """Decline when an answer citing nothing has no sentence any source supports."""
    retry_unsupported: bool = True
    """Ask once more when no source supports an answer that cites nothing."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """Sampling parameters of the answer call (temperature, max_tokens...)."""
    save_turn: Callable[[TurnRecord], None] | None = None
    """Writes the finished turn to the store in one transaction."""
