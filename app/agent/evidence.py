"""Whether the retrieved passages can answer the question, decided on evidence.

A small model almost never says "not in the documents" by itself (0 of 80 ClapNQ answers
on SmolLM2), so the agent decides before generating. The evidence of a passage is its
dense similarity to the question plus a share of the question's content words it holds;
the turn's evidence is its best passage's. On the shared ClapNQ dev set (150 answerable,
150 unanswerable, each with its own passages, MiniLM embeddings) this separates the two
with AUC 0.90 (dense alone 0.89, word coverage alone 0.76); below 0.60 it declines 63% of
the unanswerable questions and 7% of the answerable ones (threshold tuned on alternate
question ids, checked on the others: 57-74% and 4-14%). The scale is the embedder's, so
another embedder needs its own ``AGENT_MIN_EVIDENCE``.
"""

from __future__ import annotations

from app.agent.words import content_words, coverage
from app.store.records import ChunkData

COVERAGE_WEIGHT = 0.2


def evidence(question: str, chunks: list[ChunkData]) -> float | None:
    """The best passage's evidence; ``None`` when no passage has a dense score to judge."""
    words = content_words(question)
    scored = [
        float(scores["dense"]) + COVERAGE_WEIGHT * coverage(words, str(chunk.get("text", "")))
        for chunk in chunks
        if isinstance(scores := chunk.get("scores"), dict) and "dense" in scores
    ]
    return round(max(scored), 4) if scored else None


def covers_question(question: str, chunks: list[ChunkData]) -> bool:
    """Whether one passage holds every content word of the question.

    A broad question ("Tell me about water.") is far from any one passage in embedding
    space, yet a passage naming all its topics can answer it. On ClapNQ dev this keeps
    1 of the 95 declined unanswerable questions from being declined and changes nothing
    for answerable ones.
    """
    words = content_words(question)
    return bool(words) and any(
        coverage(words, str(chunk.get("text", ""))) >= 1.0 for chunk in chunks
    )
