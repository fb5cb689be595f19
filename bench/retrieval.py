"""Retrieval benchmark on SciFact (English, train queries) and CMRC2018 (Chinese, trial set).

Systems, per dataset, all over the same cached index (see ``retriever.eval``):
  * BM25 alone (Qdrant sparse vectors with the IDF modifier, language-aware analyzer),
  * dense alone (the configured embedder: all-MiniLM-L6-v2 ONNX int8 by default),
  * Flywheel hybrid (convex fusion, dense weight by the query's script),
  * the peer: plain ``bm25s`` over character unigrams + bigrams (``retriever.eval_peer``),
  * with ``--llamaindex``: LlamaIndex's ``QueryFusionRetriever`` over the same two lists.

Quality: nDCG@10, recall@100 (ranx); each row's ratio to the bm25s peer. Latency: p50/p95
per query, query encoding included. Ingestion, on the same sample of documents in the same
run: embedding alone (the encoder over the chunk texts) against Flywheel's whole ingest path
(parse, chunk, keyword vectors, embed, store in a fresh local Qdrant); the ratio is what the
pipeline keeps of the embedder's speed.

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

from retriever.eval import (  # noqa: E402
    CHUNK_DEPTH,
    corpus_documents,
    evaluate,
    fold_ids,
    load_dataset,
    open_index,
    peer_run,
    run_queries,
)
from retriever.settings import get_settings  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


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


def ingestion_rates(data: Any, settings: Any, sample: int) -> dict[str, float]:
    """docs/s of embedding alone and of the whole ingest path, on the same documents."""
    from qdrant_client import QdrantClient

    from retriever.chunking import Chunker
    from retriever.service import Retriever
    from retriever.writer import index_text

    docs = corpus_documents(data)[:sample]
    with tempfile.TemporaryDirectory() as tmp:
        client = QdrantClient(path=tmp)
        try:
            retriever = Retriever(client, settings)
            encoder = retriever.encoder
            chunker = Chunker(settings.chunk_size, settings.chunk_overlap, encoder.count_tokens)
            texts = [index_text(p.title, c) for p, _ in docs for c in chunker.chunk(p)]
            encoder.encode(texts[:8])  # warm-up: first calls allocate
            start = time.perf_counter()
            encoder.encode(texts)
            embed = len(docs) / (time.perf_counter() - start)
            start = time.perf_counter()
            retriever.ingest_documents(docs, owner="bench", collection="bench")
            whole = len(docs) / (time.perf_counter() - start)
            start = time.perf_counter()
            again = retriever.ingest_documents(docs, owner="bench", collection="bench")
            unchanged = len(docs) / (time.perf_counter() - start)
            assert all(r.status == "unchanged" for r in again)
        finally:
            client.close()
    return {"embed": embed, "ingest": whole, "reingest": unchanged, "chunks": len(texts)}


def bench_dataset(path: Path, split: str, args: argparse.Namespace) -> None:
    """Every system on one dataset, then the ingestion rates; prints its table."""
    settings = get_settings()
    data, corpus_file = load_dataset(path, split)
    retriever, meta = open_index(data, settings, corpus_file)
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
            rows.append({"system": label, **evaluate(data.qrels, run), "lat": lat})
        if args.llamaindex:
            fusion = llama_fusion(retriever, "reciprocal_rerank")

            def li_search(text: str) -> Any:
                return [_Doc(n.node.metadata["doc"]) for n in fusion.retrieve(text)]

            run, lat = run_queries(li_search, data.queries, ids, desc="LlamaIndex RRF")
            rows.append(
                {"system": "LlamaIndex fusion (RRF)", **evaluate(data.qrels, run), "lat": lat}
            )
    finally:
        retriever.client.close()
    run, lat = peer_run(data, ids)
    peer = {"system": "peer: bm25s char 1+2-grams", **evaluate(data.qrels, run), "lat": lat}
    rows.append(peer)
    rates = ingestion_rates(data, settings, args.index_sample)

    print(
        f"\n{data.name} ({split}): {len(ids)} queries, {meta['docs']} docs, {meta['chunks']} chunks"
    )
    print(f"embedder: {meta['encoder']}")
    header = f"{'system':30} {'nDCG@10':>8} {'R@100':>7} {'p50 ms':>7} {'p95 ms':>7} {'vs peer':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['system']:30} {row['ndcg@10']:8.4f} {row['recall@100']:7.4f} "
            f"{np.percentile(row['lat'], 50):7.1f} {np.percentile(row['lat'], 95):7.1f} "
            f"{row['ndcg@10'] / peer['ndcg@10']:8.3f}"
        )
    print(
        f"ingestion on the same {args.index_sample} docs ({rates['chunks']} chunks): embedding "
        f"alone {rates['embed']:.1f} docs/s, whole ingest path {rates['ingest']:.1f} docs/s "
        f"(end-to-end / embedding-alone {rates['ingest'] / rates['embed']:.2f}); "
        f"re-ingesting unchanged documents {rates['reingest']:.0f} docs/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scifact", type=Path, default=SHARED / "scifact")
    parser.add_argument("--cmrc", type=Path, default=SHARED / "cmrc2018" / "cmrc2018_trial.json")
    parser.add_argument("--only", choices=["scifact", "cmrc"], help="one dataset only")
    parser.add_argument("--limit-queries", type=int, default=0, help="first N queries only")
    parser.add_argument("--index-sample", type=int, default=200, help="docs for ingestion rates")
    parser.add_argument("--llamaindex", action="store_true", help="add LlamaIndex's fusion")
    parser.add_argument("--quick", action="store_true", help="100 queries, 60-doc ingestion")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.limit_queries = args.limit_queries or 100
        args.index_sample = 60
    if args.only != "cmrc":
        bench_dataset(args.scifact, "train", args)
    if args.only != "scifact":
        bench_dataset(args.cmrc, "trial", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
