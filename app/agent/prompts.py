"""Prompt texts of the agent. Kept together so a change to one is visible in review."""

from __future__ import annotations

from app.store.prompt_data import UserTurn, defuse
from app.store.records import ChunkData, MemoryData

ANSWER_SYSTEM = """You are Flywheel, a helpful assistant that answers from the user's documents.
Answer the question using only the numbered sources in the user's message. Cite every source
you use with its number in square brackets, like [1] or [2][3]. If the sources do not contain
the answer, say that the answer is not in the documents. Be concise."""

DIRECT_SYSTEM = """You are Flywheel, a helpful and friendly assistant.
Answer briefly. Use what you remember about the user when it helps. When the user tells
you something about themselves, thank them and say you will remember it."""

UNDERSTAND_SYSTEM = """Rewrite the user's last message as a standalone search query: replace
words like "it", "they" or "that" with what they refer to in the conversation.
Reply in JSON. "standalone": the rewritten last message, a question.
"route": "retrieve" to search the documents; "direct" only for greetings, thanks and small
talk. "sub_queries": empty, unless the last message asks several separate things; then
one short question for each."""
# The server decodes the reply under this schema (structured outputs), so even a small model
# answers with exactly these fields; the values are still checked (``parse_understanding``).
UNDERSTAND_SCHEMA = {
    "type": "object",
    "properties": {
        "standalone": {"type": "string", "minLength": 1, "maxLength": 300},
        "route": {"enum": ["retrieve", "direct"]},
        "sub_queries": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 300},
            "maxItems": 3,
        },
    },
    "required": ["standalone", "route", "sub_queries"],
    "additionalProperties": False,
}

PASSAGE_CHECK_SYSTEM = """You check whether a passage answers a question. Reply in JSON:
"answers": "yes" when the passage holds the answer to the question, otherwise "no"."""
PASSAGE_CHECK_SCHEMA = {
    "type": "object",
    "properties": {"answers": {"enum": ["yes", "no"]}},
    "required": ["answers"],
    "additionalProperties": False,
}


def passage_check_message(question: str, chunk: ChunkData) -> str:
    """The passage (fenced as data) and the question of the yes/no check."""
    return UserTurn(
        f"{question}\nDoes the passage answer this question?", format_sources([chunk]), []
    ).render()


NOT_SUPPORTED = (
    "I could not find the answer in your documents: the closest passages I found do not "
    "cover this question, so I won't guess. Try rephrasing it, or upload a document that "
    "covers it."
)
NOT_FOUND = (
    "I could not find anything about that in your documents, so I won't guess. "
    "Try rephrasing the question, or upload a document that covers it."
)


def source_label(chunk: ChunkData, *, heading: bool = True) -> str:
    """Where a passage comes from: title, page and (optionally) heading."""
    parts = (
        str(chunk.get("title") or ""),
        f"page {chunk['page']}" if chunk.get("page") else "",
        str(chunk.get("heading") or "") if heading else "",
    )
    return ", ".join(part for part in parts if part)


def format_sources(chunks: list[ChunkData]) -> list[str]:
    """The numbered sources of the answer prompt, one entry each."""
    return [
        f"[{number}] ({defuse(source_label(chunk))})\n{defuse(str(chunk.get('text', '')))}"
        for number, chunk in enumerate(chunks, start=1)
    ]


def format_memories(memories: list[MemoryData]) -> list[str]:
    """The memories of a prompt, one line each."""
    return [f"- {defuse(str(m.get('text', '')))}" for m in memories]


def user_message(question: str, chunks: list[ChunkData], memories: list[MemoryData]) -> str:
    """The last user message: the sources and memories fenced as data, then the question."""
    return UserTurn(question, format_sources(chunks), format_memories(memories)).render()
