"""Prompt texts of the agent. Kept together so a change to one is visible in review."""

from __future__ import annotations

from app.store.records import ChunkData, MemoryData

ANSWER_SYSTEM = """You are Flywheel, a helpful assistant that answers from the user's documents.
Answer the question using only the numbered sources below. Cite every source you use with
its number in square brackets, like [1] or [2][3]. If the sources do not contain the answer,
say that the answer is not in the documents. Be concise."""

DIRECT_SYSTEM = """You are Flywheel, a helpful and friendly assistant.
Answer briefly. Use what you remember about the user when it helps."""

UNDERSTAND_SYSTEM = """Rewrite the user's last message into a standalone search query, using
the conversation for context, and decide whether documents are needed.
Reply with JSON only: {"standalone": "<query>", "route": "retrieve" or "direct",
"sub_queries": ["<at most 3 queries, only for questions with several parts>"]}.
Use "direct" only for greetings, thanks and small talk, or questions about the user."""

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


def format_sources(chunks: list[ChunkData]) -> str:
    """The numbered sources block of the answer prompt."""
    return "Sources:\n" + "\n\n".join(
        f"[{number}] ({source_label(chunk)})\n{chunk.get('text', '')}"
        for number, chunk in enumerate(chunks, start=1)
    )


def format_memories(memories: list[MemoryData]) -> str:
    """The memories block of a prompt."""
    return "Memories about the user:\n" + "\n".join(f"- {m.get('text', '')}" for m in memories)
