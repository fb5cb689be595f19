"""Retrieval benchmark on SciFact's development (train) split, in one run.

Systems, all over the same cached index (see ``retriever.eval``):
  * BM25 alone (Qdrant sparse vectors with the IDF modifier),
  * dense alone (all-MiniLM-L6-v2, ONNX int8),
  * Flywheel hybrid (tuned convex fusion of the two),
  * LlamaIndex's ``QueryFusionRetriever`` over the same two retrievers, in its
    reciprocal-rank mode (its hybrid default) and its relative-score mode.

Quality: nDCG@10, recall@100 (ranx). Latency: p50/p95 per query, query encoding included.
Indexing: docs/s on the same sample of documents for the keyword vectors, plain
sentence-transformers fp32 embedding (the peer), Flywheel's ONNX int8 embedding, and
Flywheel's whole ingest path (chunk, embed, store in a fresh local Qdrant).

Usage: ``.venv/bin/python bench/retrieval.py [--limit-queries N] [--quick]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retriever.encoders import default_model_path  # noqa: E402
from retriever.eval import (  # noqa: E402
    CHUNK_DEPTH,
    evaluate,
    fold_ids,
    load_dataset,
    open_index,
    run_queries,
)
from retriever.keyword import bm25_document  # noqa: E402
from retriever.settings import get_settings  # noqa: E402


def llama_fusion(retriever: Any, mode: str) -> Any:
    """LlamaIndex's QueryFusionRetriever over our BM25 and dense retrievers."""
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.retrievers import BaseRetriever, QueryFusionRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    class Single(BaseRetriever):
        def __init__(self, search_mode: str) -> None:
            super().__init__()
            self.search_mode = search_mode

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            hits = retriever.search(
                query_bundle.query_str,
                owner=None,
                k=retriever.settings.candidates,
                mode=self.search_mode,
            )
            return [
                NodeWithScore(
                    node=TextNode(id_=h.chunk_id, text=h.text, metadata={"doc": h.document_id}),
                    score=h.score,
                )
                for h in hits
            ]

    return QueryFusionRetriever(
        [Single("dense"), Single("bm25")],
        llm=MockLLM(),
        mode=mode,  # type: ignore[arg-type]
        similarity_top_k=CHUNK_DEPTH,
        num_queries=1,  # no LLM query rewriting: fuse the same two lists we fuse
        use_async=False,
    )


class _Doc:
    def __init__(self, document_id: str) -> None:
        self.document_id = document_id


def indexing_rates(data: Any, settings: Any, sample: int) -> dict[str, float]:
    """docs/s of each indexing path on the same first ``sample`` documents."""
    from qdrant_client import QdrantClient
    from sentence_transformers import SentenceTransformer

    from retriever.encoders import get_encoder
    from retriever.parsing import ParsedDocument, Section
    from retriever.service import Retriever

    docs = [d for d in data.corpus if str(d.get("text") or "").strip()][:sample]
    texts = [f"{d.get('title', '')}\n{d['text']}" for d in docs]
    rates: dict[str, float] = {}

    start = time.perf_counter()
    for text in texts:
        bm25_document(text)
    rates["bm25"] = len(docs) / (time.perf_counter() - start)

    encoder = get_encoder(settings)
    encoder.encode(texts[:8])
    start = time.perf_counter()
    ours = encoder.encode(texts).dense
    rates["dense"] = len(docs) / (time.perf_counter() - start)

    plain = SentenceTransformer(default_model_path(), device="cpu")
    plain.encode(texts[:8])
    start = time.perf_counter()
    fp32 = plain.encode(texts, batch_size=32, normalize_embeddings=True)
    rates["dense-fp32"] = len(docs) / (time.perf_counter() - start)
    rates["cosine-int8-vs-fp32"] = float(np.mean(np.sum(ours * fp32, axis=1)))

    with tempfile.TemporaryDirectory() as tmp:
        client = QdrantClient(path=tmp)
        try:
            retriever = Retriever(client, settings)
            parsed = [
                (
                    ParsedDocument(
                        str(d.get("title") or ""), d["_id"], [Section(d["text"], None, False)]
                    ),
                    d["_id"],
                )
                for d in docs
            ]
            start = time.perf_counter()
            retriever.ingest_documents(parsed, owner="bench", collection="bench")
            rates["hybrid"] = len(docs) / (time.perf_counter() - start)
        finally:
            client.close()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--beir", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit-queries", type=int, default=0, help="first N queries only")
    parser.add_argument("--index-sample", type=int, default=300, help="docs for indexing rates")
    parser.add_argument("--quick", action="store_true", help="100 queries, 100-doc indexing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.limit_queries = args.limit_queries or 100
        args.index_sample = 100
    settings = get_settings()
    data, _ = load_dataset(args.beir, args.split)
    retriever, meta = open_index(data, settings, args.beir / "corpus.jsonl")
    ids = fold_ids(list(data.queries), "all")
    if args.limit_queries:
        ids = ids[: args.limit_queries]

    rows: list[dict[str, Any]] = []
    try:
        for label, mode in [("BM25", "bm25"), ("dense", "dense"), ("Flywheel hybrid", "hybrid")]:

            def search(text: str, mode: str = mode) -> Any:
                return retriever.search(text, owner=None, k=CHUNK_DEPTH, mode=mode)

            search("warm up")
            run, lat = run_queries(search, data.queries, ids, desc=label)
            rows.append({"system": label, "key": mode, **evaluate(data.qrels, run), "lat": lat})
        for label, fmode in [
            ("LlamaIndex fusion (RRF)", "reciprocal_rerank"),
            ("LlamaIndex fusion (relative)", "relative_score"),
        ]:
            fusion = llama_fusion(retriever, fmode)

            def li_search(text: str, fusion: Any = fusion) -> Any:
                return [_Doc(n.node.metadata["doc"]) for n in fusion.retrieve(text)]

            li_search("warm up")
            run, lat = run_queries(li_search, data.queries, ids, desc=label)
            rows.append({"system": label, "key": "hybrid", **evaluate(data.qrels, run), "lat": lat})
        rates = indexing_rates(data, settings, args.index_sample)
    finally:
        retriever.client.close()

    print(
        f"\nSciFact {args.split}: {len(ids)} queries, {meta['docs']} docs, {meta['chunks']} chunks"
    )
    print(f"(full index built at {meta['index_docs_per_s']:.1f} docs/s, whole ingest path)")
    header = (
        f"{'system':30} {'nDCG@10':>8} {'R@100':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'idx doc/s':>10} {'nDCG/best peer':>15}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        peers = [r["ndcg@10"] for r in rows if r is not row]
        ratio = row["ndcg@10"] / max(peers)
        rate = rates["hybrid"] if row["key"] == "hybrid" else rates[row["key"]]
        print(
            f"{row['system']:30} {row['ndcg@10']:8.4f} {row['recall@100']:7.4f} "
            f"{np.percentile(row['lat'], 50):7.1f} {np.percentile(row['lat'], 95):7.1f} "
            f"{rate:10.1f} {ratio:15.3f}"
        )
    print(
        f"\nIndexing on the same {args.index_sample} docs: "
        f"keyword vectors {rates['bm25']:.0f} docs/s; "
        f"embedding with sentence-transformers fp32 {rates['dense-fp32']:.1f} docs/s vs ONNX int8 "
        f"{rates['dense']:.1f} docs/s ({rates['dense'] / rates['dense-fp32']:.2f}x, mean cosine "
        f"{rates['cosine-int8-vs-fp32']:.4f}); whole Flywheel ingest (chunk, embed, store) "
        f"{rates['hybrid']:.1f} docs/s. Hybrid rows share one index."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
