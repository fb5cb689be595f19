"""Checks on mem0's LLM extraction, and the explicit-statement fallback.

mem0's ``add(infer=True)`` makes one JSON-mode chat call and expects
``{"memory": [{"text": ...}, ...]}``. When the reply does not parse it logs an error and
returns ``[]``, exactly as when the model found nothing to remember, and an entry that
is not an object makes it raise deep inside ``add``. Small served models often answer
with broken JSON, so :class:`CheckedExtractor` sits between mem0 and its LLM: it parses
the reply itself, hands mem0 only well-formed facts, and records what went wrong so the
caller can log the cause.

It can also swap mem0's system prompt for :data:`COMPACT_PROMPT`. mem0's own is about
34,000 characters (some 8,000 tokens): fine for a GPU server with prefix caching, but a
small model on a CPU spends tens of seconds reading it, and the tiny demo model's 4,096
token context cannot hold it. mem0 2.x has no setting for that prompt, so the swap happens
here, on the way to the model; the reply format is the same.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from memory.settings import MemorySettings

logger = logging.getLogger(__name__)

# Longest excerpt of a bad reply quoted in a warning.
_EXCERPT_CHARS = 160
_CODE_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


class ChatLLM(Protocol):
    """The part of mem0's LLM interface that extraction uses."""

    def generate_response(self, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        """Return the model's reply to ``messages``."""
        ...


@dataclass
class Extraction:
    """The outcome of one extraction reply."""

    facts: list[dict[str, Any]] = field(default_factory=list)
    """Entries with a non-empty ``text``, as the model wrote them."""
    problem: str | None = None
    """Why nothing (or not everything) usable came back; ``None`` when the reply was sound."""


def _excerpt(text: str) -> str:
    return repr(text[:_EXCERPT_CHARS] + ("…" if len(text) > _EXCERPT_CHARS else ""))


def _load_json(text: str) -> Any:
    """Parse a reply the way mem0 does: bare JSON, a fenced block, or the outer braces."""
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError:
        fenced = _CODE_FENCE.search(text)
        if fenced:
            return json.loads(fenced.group(1), strict=False)
        start, end = text.find("{"), text.rfind("}")
        if start != -1 and end > start:
            return json.loads(text[start : end + 1], strict=False)
        raise


def parse_extraction(reply: Any) -> Extraction:
    """Parse an extraction reply into usable facts, or say precisely why it is unusable."""
    if not isinstance(reply, str) or not reply.strip():
        return Extraction(problem=f"the model returned an empty reply ({type(reply).__name__})")
    try:
        data = _load_json(reply.strip())
    except json.JSONDecodeError as exc:
        return Extraction(problem=f"the reply is not valid JSON ({exc.msg}): {_excerpt(reply)}")
    if not isinstance(data, dict) or "memory" not in data:
        return Extraction(
            problem=f'the reply is JSON but not {{"memory": [...]}}: {_excerpt(reply)}'
        )
    entries = data["memory"]
    if not isinstance(entries, list):
        return Extraction(problem=f'"memory" is a {type(entries).__name__}, not a list')
    facts = [
        entry
        for entry in entries
        if isinstance(entry, dict)
        and isinstance(entry.get("text"), str)
        and entry["text"].strip()
        and not _placeholder(entry["text"])
    ]
    dropped = len(entries) - len(facts)
    problem = None
    if dropped:
        problem = (
            f'{dropped} of {len(entries)} "memory" entries have no usable "text" '
            "(empty, or the prompt's own example echoed back)"
        )
    return Extraction(facts=facts, problem=problem)


# The prompt's template words: a small model copies them as "facts" ("first fact").
_PLACEHOLDER = re.compile(
    r"^\s*(<.*>|(first|second|third|another|a|the|new) fact|fact \d+|text)\s*\.?\s*$",
    re.IGNORECASE,
)


def _placeholder(text: str) -> bool:
    return bool(_PLACEHOLDER.match(text))


# A short extraction prompt for small models, in mem0's reply format. mem0 sends it the
# conversation, the user's related existing memories and today's date as the user message.
COMPACT_PROMPT = """You keep long-term memories about a user of a chat assistant.
Read the new messages and write down the durable facts the USER states about themself:
identity, preferences, diet, health, work, projects, tools, places, plans, relationships.

Rules:
- One short, self-contained sentence per fact, in the third person ("Is vegetarian",
  "Their project is written in Rust").
- Only what the user said; nothing the assistant suggested, no guesses, no small talk.
- Skip facts already in "Existing Memories".
- Resolve relative dates ("yesterday") against the Observation Date.

Answer with JSON only, exactly in this shape:
{"memory": [{"text": "first fact"}, {"text": "second fact"}]}
When there is nothing worth remembering, answer {"memory": []}."""


# The reply's shape, decoded under this schema by the model server (structured outputs):
# at most a few short facts, each an object with its text.
MEMORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "memory": {
            "type": "array",
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {"text": {"type": "string", "minLength": 3, "maxLength": 200}},
                "required": ["text"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["memory"],
    "additionalProperties": False,
}
MEMORY_FORMAT = {"type": "json_schema", "json_schema": {"name": "memory", "schema": MEMORY_SCHEMA}}


class CheckedExtractor:
    """Wraps mem0's LLM: passes mem0 only well-formed facts and keeps the last outcome.

    The outcome is kept per thread, so the thread that called ``Memory.add`` reads the
    outcome of its own extraction with :meth:`take`. With ``system_prompt`` set, mem0's
    system message is replaced by it.
    """

    def __init__(self, llm: ChatLLM, system_prompt: str | None = None) -> None:
        self.llm = llm
        self.system_prompt = system_prompt
        self._local = threading.local()

    def generate_response(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        """Ask the wrapped LLM, then return a reply mem0 is sure to parse."""
        if self.system_prompt is not None:
            messages = [
                {"role": "system", "content": self.system_prompt} if m["role"] == "system" else m
                for m in messages
            ]
        kwargs["response_format"] = MEMORY_FORMAT  # mem0 asks for any JSON object
        outcome = parse_extraction(self.llm.generate_response(messages=messages, **kwargs))
        self._local.outcome = outcome
        return json.dumps({"memory": outcome.facts})

    def reset(self) -> None:
        """Forget this thread's last outcome (call before ``Memory.add``)."""
        self._local.outcome = None

    def take(self) -> Extraction | None:
        """This thread's outcome since :meth:`reset`; ``None`` if no reply came back."""
        outcome: Extraction | None = getattr(self._local, "outcome", None)
        self._local.outcome = None
        return outcome


# A sentence in which the user speaks about themself: "I'm vegetarian", "my project is in Rust".
_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll)\b|\b(?:my|mine|myself)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Statements shorter than this are greetings or fragments; longer ones are pasted text.
_MIN_STATEMENT_CHARS, _MAX_STATEMENT_CHARS = 8, 300


def explicit_statements(messages: list[dict[str, Any]]) -> list[str]:
    """The user's own first-person statements (not questions) in ``messages``, in order."""
    statements: list[str] = []
    for message in messages:
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, str):
            continue
        for sentence in _SENTENCE_END.split(content):
            sentence = sentence.strip()
            if (
                _MIN_STATEMENT_CHARS <= len(sentence) <= _MAX_STATEMENT_CHARS
                and not sentence.endswith("?")
                and _FIRST_PERSON.search(sentence)
                and sentence not in statements
            ):
                statements.append(sentence)
    return statements


def server_trouble(exc: BaseException) -> str | None:
    """Classify a failed extraction request: ``"busy"``, ``"unreachable"`` or ``None``.

    Busy: a timeout, or an overloaded server (429/503). Unreachable: no connection could
    be made. ``None``: anything else (a bug, a bad reply). mem0 wraps the client's error
    in its own, so the cause chain is searched.
    """
    import openai

    seen: BaseException | None = exc
    for _ in range(5):  # mem0 wraps once or twice; a cycle must not hang us
        if seen is None:
            break
        if isinstance(seen, openai.APITimeoutError | TimeoutError):
            return "busy"
        if isinstance(seen, openai.APIStatusError) and seen.status_code in (429, 503):
            return "busy"
        if isinstance(seen, openai.APIConnectionError):
            return "unreachable"
        seen = seen.__cause__ or seen.__context__
    return None


def log_failure(
    exc: Exception, *, user_id: str, elapsed_s: float, settings: MemorySettings, waiting: int
) -> None:
    """Say why an extraction request failed: a busy server is not a server that is down."""
    cause = exc.__cause__ or exc
    trouble = server_trouble(exc)
    url = settings.llm_base_url
    if trouble == "busy":
        logger.warning(
            "memory: the model server at %s is busy: extraction for user %r gave up after "
            "%.1fs (%s, MEMORY_TIMEOUT_S=%.0f); dropped this turn, not retried "
            "(%d more of the user's turns waiting)",
            url,
            user_id,
            elapsed_s,
            type(cause).__name__,
            settings.timeout_s,
            waiting,
        )
    elif trouble == "unreachable":
        logger.warning(
            "memory: the model server at %s is unreachable (%s: %s); stored nothing from this "
            "turn of user %r. Is it up?",
            url,
            type(cause).__name__,
            cause,
            user_id,
        )
    else:
        logger.warning(
            "memory: extraction for user %r failed after %.1fs (%s: %s); stored nothing from "
            "this turn",
            user_id,
            elapsed_s,
            type(cause).__name__,
            cause,
        )
