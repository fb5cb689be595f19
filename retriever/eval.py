"""Retrieval evaluation: ``python -m retriever.eval --beir DIR --split S`` or ``--cmrc FILE``.

Reads a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) or a
CMRC2018 SQuAD-style file (passages are the corpus; see ``eval_data``); builds the index once
per corpus and settings (cached under ``<DATA_DIR>/eval/``, reused on later runs), runs
every query of the split through :meth:`Retriever.search`, and reports nDCG@10,
recall@100 and MRR@10 (computed by ranx), query latency p50/p95 (query encoding
included) and indexing throughput (parse, chunk, embed, store; measured when the index
was built). ``--json`` makes the last line one JSON object.

Chunks are scored by the retriever; a document's rank is that of its best chunk.

``--peer`` also runs the plain ``bm25s`` character-bigram peer (``eval_peer``) on the same
queries. ``--tune`` grid-searches the fusion (RRF or convex, dense weight) on a fixed half
of the split's queries (the tuning fold) and reports the other half beside it, so a weight
can be chosen without looking at evaluation queries; a dataset of Chinese queries tunes
``HYBRID_DENSE_WEIGHT_CJK``, any other ``HYBRID_DENSE_WEIGHT``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from retriever.eval_data import BeirData, Fold, fold_ids, load_dataset
from retriever.settings import RetrieverSettings, get_settings

__all__ = ["BeirData", "fold_ids", "load_dataset"]

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@100", "mrr@10")
DOC_DEPTH = 100  # documents per query in the run (recall@100)
CHUNK_DEPTH = 200  # chunks asked for, so that 100 distinct documents remain


def index_dir(settings: RetrieverSettings, corpus_file: Path) -> Path:
    """Cache folder of the index of ``corpus_file`` under the current settings."""
    from retriever.encoders import default_model_path
    from retriever.writer import INDEX_VERSION

    stat = corpus_file.stat()
    key = "|".join(
        str(x)
        for x in (
            corpus_file.resolve(),
            stat.st_size,
            int(stat.st_mtime),
            settings.embedding_model or default_model_path(),
            settings.embedding_backend,
            settings.chunk_size,
            settings.chunk_overlap,
            INDEX_VERSION,
        )
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return settings.data_dir / "eval" / f"{corpus_file.parent.resolve().name}-{digest}"


def corpus_documents(data: BeirData) -> list[tuple[Any, str]]:
    """The corpus as parsed documents with their ids (plain text, title kept)."""
    from retriever.parsing import ParsedDocument, Section

    return [
        (
            ParsedDocument(
                str(d.get("title") or ""), str(d["_id"]), [Section(d["text"], None, False)]
            ),
            str(d["_id"]),
        )
        for d in data.corpus
        if str(d.get("text") or "").strip()
    ]


def open_index(
    data: BeirData, settings: RetrieverSettings, corpus_file: Path, progress: bool = True
) -> tuple[Any, dict[str, Any]]:
    """The retriever over the cached index of ``data``, building it first if needed."""
    from qdrant_client import QdrantClient

    from retriever.service import Retriever

    folder = index_dir(settings, corpus_file)
    meta_file = folder / "index.json"
    folder.mkdir(parents=True, exist_ok=True)
    client = QdrantClient(path=str(folder / "qdrant"))
    retriever = Retriever(client, settings)
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        meta["cached"] = True
        return retriever, meta
    docs = corpus_documents(data)
    start = time.perf_counter()
    results = retriever.ingest_documents(
        docs, owner="beir", collection=data.name, progress=progress
    )
    seconds = time.perf_counter() - start
    meta = {
        "docs": len(docs),
        "chunks": sum(r.chunks for r in results),
        "seconds": round(seconds, 2),
        "index_docs_per_s": round(len(docs) / seconds, 2),
        "encoder": retriever.encoder.name,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta_file.write_text(json.dumps(meta, indent=2))
    meta["cached"] = False
    return retriever, meta


def doc_run(results: Sequence[Any], depth: int = DOC_DEPTH) -> dict[str, float]:
    """Chunks (best first) to a document run: each document at its best chunk's rank."""
    run: dict[str, float] = {}
    for result in results:
        if result.document_id not in run:
            run[result.document_id] = float(depth - len(run))
            if len(run) == depth:
                break
    return run


def evaluate(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> dict[str, float]:
    """nDCG@10, recall@100 and MRR@10 of ``run`` (ranx); queries with no hit score 0."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    qrels = {q: qrels[q] for q in run}
    filled = {q: (docs or {"__none__": 0.0}) for q, docs in run.items()}
    scores = ranx_evaluate(Qrels(qrels), Run(filled), list(METRICS), make_comparable=True)
    return {m: float(cast(dict[str, float], scores)[m]) for m in METRICS}


def run_queries(
    search: Callable[[str], Sequence[Any]],
    queries: dict[str, str],
    ids: Sequence[str],
    progress: bool = True,
    desc: str = "queries",
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Search every query; returns the document run and the latencies in ms."""
    from tqdm import tqdm

    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    for qid in tqdm(ids, desc=desc, unit="query", disable=not progress):
        start = time.perf_counter()
        results = search(queries[qid])
        latencies.append((time.perf_counter() - start) * 1000)
        run[qid] = doc_run(results)
    return run, latencies


def tune(retriever: Any, data: BeirData, progress: bool) -> list[dict[str, Any]]:
    """Grid over fusion method and dense weight, scored on the tune and check folds."""
    from tqdm import tqdm

    from retriever.fusion import fuse
    from retriever.qdrant import BM25, DENSE

    lists: dict[str, dict[str, list[tuple[str, float]]]] = {}
    docs_of: dict[str, str] = {}
    for qid in tqdm(sorted(data.queries), desc="candidate lists", disable=not progress):
        hits = retriever.searcher.lists(
            data.queries[qid], ("dense", "bm25"), None, None, retriever.settings.candidates
        )
        lists[qid] = {n: [(h.id, h.score) for h in hits[n]] for n in hits}
        for name_hits in hits.values():
            for h in name_hits:
                docs_of[h.id] = h.payload["document_id"]
    folds = {f: fold_ids(list(data.queries), f) for f in ("tune", "check")}
    rows = []
    grid: list[tuple[str, float]] = [("rrf", w) for w in (0.3, 0.4, 0.5, 0.6, 0.7)]
    grid += [
        ("convex", w)
        for w in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
    ]
    for method, weight in grid:
        row: dict[str, Any] = {"fusion": method, "dense_weight": weight}
        for fold, ids in folds.items():
            run = {}
            for qid in ids:
                fused = fuse(
                    [lists[qid][DENSE], lists[qid][BM25]],
                    [weight, 1 - weight],
                    method=cast(Any, method),
                )
                run[qid] = doc_run([_Doc(docs_of[i]) for i, _ in fused])
            row[f"{fold} ndcg@10"] = round(evaluate(data.qrels, run)["ndcg@10"], 4)
        rows.append(row)
    return rows


@dataclass(slots=True)
class _Doc:
    document_id: str


def peer_run(
    data: BeirData, ids: Sequence[str], progress: bool = True
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """The bm25s character-bigram peer's document run and latencies (ms) on ``ids``."""
    from retriever.eval_peer import BigramBM25

    docs = [d for d in data.corpus if str(d.get("text") or "").strip()]
    peer = BigramBM25(
        [str(d["_id"]) for d in docs], [f"{d.get('title') or ''}\n{d['text']}" for d in docs]
    )

    def search(text: str) -> Sequence[Any]:
        return [_Doc(doc) for doc, _ in peer.search(text, DOC_DEPTH)]

    return run_queries(search, data.queries, ids, progress, desc="bm25s bigram peer")


def _say(line: str) -> None:
    """CLI output (the report is the product of this command, not a log line)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _print_tuning(rows: list[dict[str, Any]], data: BeirData, as_json: bool) -> None:
    from retriever.keyword import script_of

    cjk = sum(script_of(q) == "cjk" for q in data.queries.values()) > len(data.queries) / 2
    setting = "HYBRID_DENSE_WEIGHT_CJK" if cjk else "HYBRID_DENSE_WEIGHT"
    _say(f"{'fusion':8} {'dense_w':>8} {'tune nDCG@10':>13} {'check nDCG@10':>14}")
    for row in rows:
        _say(
            f"{row['fusion']:8} {row['dense_weight']:8.2f} "
            f"{row['tune ndcg@10']:13.4f} {row['check ndcg@10']:14.4f}"
        )
    best = max(rows, key=lambda r: r["tune ndcg@10"])
    _say(f"best on the tune fold: FUSION={best['fusion']} {setting}={best['dense_weight']}")
    if as_json:
        _say(json.dumps({"tuning": rows, "best": best, "setting": setting}))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retriever.eval", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir", type=Path, help="BEIR folder")
    source.add_argument("--cmrc", type=Path, help="CMRC2018 (SQuAD-style) JSON file")
    parser.add_argument("--split", default="test", help="qrels split (qrels/<split>.tsv)")
    parser.add_argument(
        "--mode", choices=["bm25", "dense", "hybrid", "hybrid+rerank"], default="hybrid"
    )
    parser.add_argument("--fold", choices=["all", "tune", "check"], default="all")
    parser.add_argument("--max-queries", type=int, default=0, help="only the first N queries")
    parser.add_argument("--tune", action="store_true", help="grid-search the fusion instead")
    parser.add_argument("--peer", action="store_true", help="also run the bm25s bigram peer")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _report(
    data: BeirData, meta: dict[str, Any], scores: dict[str, float], latencies: list[float]
) -> dict[str, Any]:
    return {
        **{m: round(v, 4) for m, v in scores.items()},
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "index_docs_per_s": meta["index_docs_per_s"],
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    data, corpus_file = load_dataset(args.cmrc or args.beir, args.split)
    progress = not args.quiet
    retriever, meta = open_index(data, settings, corpus_file, progress)
    try:
        if args.tune:
            _print_tuning(tune(retriever, data, progress), data, args.json)
            return 0
        ids = fold_ids(list(data.queries), cast(Fold, args.fold))
        if args.max_queries:
            ids = ids[: args.max_queries]
        if not ids:
            logger.error("no queries of split %r in %s", args.split, args.cmrc or args.beir)
            return 1
        mode = args.mode

        def search(text: str) -> Sequence[Any]:
            return retriever.search(text, owner=None, k=CHUNK_DEPTH, mode=mode)

        search("warm-up query")  # first call loads lazily built state; not timed
        cpu_start = time.process_time()
        run, latencies = run_queries(search, data.queries, ids, progress, desc=mode)
        cpu_ms = (time.process_time() - cpu_start) * 1000 / len(ids)
        scores = evaluate(data.qrels, run)
        report = {**_report(data, meta, scores, latencies), "mode": mode, "queries": len(ids)}
        cached = " (cached index; measured when it was built)" if meta.get("cached") else ""
        _say(f"{data.name} split={args.split} fold={args.fold} mode={mode} queries={len(ids)}")
        _say(f"  docs={meta['docs']} chunks={meta['chunks']} encoder={meta['encoder']}")
        for metric in METRICS:
            _say(f"  {metric:11} {scores[metric]:.4f}")
        _say(
            f"  latency     p50 {report['p50_ms']:.1f} ms, p95 {report['p95_ms']:.1f} ms "
            f"(wall clock; {cpu_ms:.1f} ms of CPU per query)"
        )
        _say(f"  indexing    {meta['index_docs_per_s']:.1f} docs/s{cached}")
        if args.peer:
            peer, peer_latencies = peer_run(data, ids, progress)
            peer_scores = evaluate(data.qrels, peer)
            report["peer"] = _report(data, {"index_docs_per_s": 0}, peer_scores, peer_latencies)
            _say(
                f"  bm25s bigram peer: nDCG@10 {peer_scores['ndcg@10']:.4f}, recall@100 "
                f"{peer_scores['recall@100']:.4f}, p95 {report['peer']['p95_ms']:.1f} ms"
            )
        if args.json:
            _say(json.dumps(report))
        return 0
    finally:
        retriever.client.close()


if __name__ == "__main__":
    sys.exit(main())
