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


def _shares(question: str, chunks: list[ChunkData]) -> tuple[list[float], bool]:
    """Each passage's share of the question's content words, and whether there are any."""
    words = content_words(question)
    return [coverage(words, str(chunk.get("text", ""))) for chunk in chunks], bool(words)


def _best(chunks: list[ChunkData], shares: list[float]) -> float | None:
    scored = [
        float(scores["dense"]) + COVERAGE_WEIGHT * share
        for chunk, share in zip(chunks, shares, strict=True)
        if isinstance(scores := chunk.get("scores"), dict) and "dense" in scores
    ]
    return round(max(scored), 4) if scored else None


def evidence(question: str, chunks: list[ChunkData]) -> float | None:
    """The best passage's evidence; ``None`` when no passage has a dense score to judge."""
    return _best(chunks, _shares(question, chunks)[0])


def covers_question(question: str, chunks: list[ChunkData]) -> bool:
    """Whether one passage holds every content word of the question.

    A broad question ("Tell me about water.") is far from any one passage in embedding
    space, yet a passage naming all its topics can answer it. On ClapNQ dev this keeps
    1 of the 95 declined unanswerable questions from being declined and changes nothing
    for answerable ones.
    """
    shares, has_words = _shares(question, chunks)
    return has_words and any(share >= 1.0 for share in shares)


def weigh(question: str, chunks: list[ChunkData], threshold: float) -> tuple[float | None, bool]:
    """The turn's evidence and whether to answer, reading each passage once.

    Answer when there is a passage and: nothing to judge by (no dense score), the check
    is off (``threshold`` <= 0), the evidence reaches it, or one passage covers the question.
    """
    if not chunks:
        return None, False
    shares, has_words = _shares(question, chunks)
    weight = _best(chunks, shares)
    covered = has_words and any(share >= 1.0 for share in shares)
    return weight, weight is None or threshold <= 0 or weight >= threshold or covered
