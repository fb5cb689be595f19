"""The optional model paths run for real: the FlagEmbedding reranker and BGE-M3.

Both models are tiny random-weight stand-ins built locally (``backend.tiny``), so these
tests prove the code paths, not ranking quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

DOCS = {
    "cats": "Cats sleep sixteen hours a day and purr when content.",
    "rivers": "The Mara river is crossed by zebras during the migration.",
    "tax": "Income tax returns are due in April in many countries.",
}


def test_hybrid_rerank_uses_the_cross_encoder(
    make_retriever: Any, tiny_reranker_model: Path
) -> None:
    retriever = make_retriever(RERANKER_MODEL=str(tiny_reranker_model), RERANK_CANDIDATES=3)
    for title, text in DOCS.items():
        retriever.ingest_text(text, title=title, owner="alice")
    plain = retriever.search("zebra river migration", owner="alice", k=3, mode="hybrid")
    reranked = retriever.search("zebra river migration", owner="alice", k=3, mode="hybrid+rerank")
    assert {r.chunk_id for r in reranked} == {r.chunk_id for r in plain}
    assert all("rerank" in r.scores and r.score == r.scores["rerank"] for r in reranked)
    assert [r.score for r in reranked] == sorted((r.score for r in reranked), reverse=True)
    from retriever.encoders import get_reranker

    direct = get_reranker(str(tiny_reranker_model)).score("zebra river migration", ["x", "y"])
    assert len(direct) == 2 and all(np.isfinite(direct))


def test_rerank_mode_without_a_model_is_plain_hybrid(retriever: Any) -> None:
    for title, text in DOCS.items():
        retriever.ingest_text(text, title=title, owner="alice")
    plain = retriever.search("tax returns", owner="alice", k=3, mode="hybrid")
    asked = retriever.search("tax returns", owner="alice", k=3, mode="hybrid+rerank")
    assert [r.chunk_id for r in asked] == [r.chunk_id for r in plain]


def test_bge_m3_dense_and_lexical_path(make_retriever: Any, tiny_m3_model: Path) -> None:
    retriever = make_retriever(
        EMBEDDING_MODEL=f"bge-m3:{tiny_m3_model}", QDRANT_COLLECTION="m3_chunks"
    )
    assert retriever.encoder.name.startswith("bge-m3:") and retriever.encoder.dim == 32
    for title, text in DOCS.items():
        retriever.ingest_text(text, title=title, owner="alice")
    hits = retriever.search("cats sleep purr", owner="alice", k=3, mode="hybrid")
    assert hits and hits[0].title == "cats"  # BM25 and the lexical list agree on the words
    assert "lexical" in hits[0].scores or "bm25" in hits[0].scores
    encoded = retriever.encoder.encode(["cats sleep"])
    assert encoded.lexical is not None and encoded.lexical[0].indices
    assert np.linalg.norm(encoded.dense[0]) == pytest.approx(1.0, rel=1e-5)
    assert retriever.search("cats", owner="bob", k=3) == []
