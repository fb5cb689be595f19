"""Retrieval evaluation on a BEIR folder: ``python -m retriever.eval --beir DIR --split S``.

Reads ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``; builds the index once
per corpus and settings (cached under ``<DATA_DIR>/eval/``, reused on later runs), runs
every query of the split through :meth:`Retriever.search`, and reports nDCG@10,
recall@100 and MRR@10 (computed by ranx), query latency p50/p95 (query encoding
included) and indexing throughput (parse, chunk, embed, store; measured when the index
was built). ``--json`` makes the last line one JSON object.

Chunks are scored by the retriever; a document's rank is that of its best chunk.

``--tune`` grid-searches the fusion (RRF or convex, dense weight) on a fixed half of the
split's queries (the tuning fold) and reports the other half beside it, so a weight can
be chosen without looking at evaluation queries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from retriever.settings import RetrieverSettings, get_settings

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@100", "mrr@10")
Fold = Literal["all", "tune", "check"]
DOC_DEPTH = 100  # documents per query in the run (recall@100)
CHUNK_DEPTH = 200  # chunks asked for, so that 100 distinct documents remain


@dataclass(slots=True)
class BeirData:
    """A BEIR folder loaded in memory."""

    name: str
    corpus: list[dict[str, Any]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(folder: Path, split: str) -> BeirData:
    """Load corpus, the split's queries and its relevance judgements."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; is {folder} a BEIR folder?")
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open() if line.strip()]
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(qrels_path.open()):
        parts = line.rstrip("\n").split("\t")
        if n == 0 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        qid, did, score = parts[0], parts[1], int(parts[2])
        qrels.setdefault(qid, {})[did] = score
    queries = {}
    for line in (folder / "queries.jsonl").open():
        if line.strip():
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = row["text"]
    return BeirData(folder.resolve().name, corpus, queries, qrels)


def fold_ids(query_ids: Sequence[str], fold: Fold) -> list[str]:
    """The query ids of a fold: a fixed shuffle of the sorted ids, cut in two halves."""
    ids = sorted(query_ids)
    if fold == "all":
        return ids
    shuffled = ids[:]
    random.Random(13).shuffle(shuffled)
    half = len(shuffled) // 2
    chosen = set(shuffled[:half] if fold == "tune" else shuffled[half:])
    return [i for i in ids if i in chosen]


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


def open_index(
    data: BeirData, settings: RetrieverSettings, corpus_file: Path, progress: bool = True
) -> tuple[Any, dict[str, Any]]:
    """The retriever over the cached index of ``data``, building it first if needed."""
    from qdrant_client import QdrantClient

    from retriever.parsing import ParsedDocument, Section
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
    docs = [
        (
            ParsedDocument(
                str(d.get("title") or ""), str(d["_id"]), [Section(d["text"], None, False)]
            ),
            str(d["_id"]),
        )
        for d in data.corpus
        if str(d.get("text") or "").strip()
    ]
    start = time.perf_counter()
    chunks = 0
    from tqdm import tqdm

    with tqdm(
        total=len(docs), desc=f"indexing {data.name}", unit="doc", disable=not progress
    ) as bar:
        for i in range(0, len(docs), 512):
            results = retriever.ingest_documents(
                docs[i : i + 512], owner="beir", collection=data.name
            )
            chunks += sum(r.chunks for r in results)
            bar.update(len(results))
    seconds = time.perf_counter() - start
    meta = {
        "docs": len(docs),
        "chunks": chunks,
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


def _tune(retriever: Any, data: BeirData, progress: bool) -> list[dict[str, Any]]:
    """Grid over fusion method and dense weight, scored on the tune and check folds."""
    from retriever.encoders import bm25_query
    from retriever.fusion import fuse
    from retriever.qdrant import BM25, DENSE

    lists: dict[str, dict[str, list[tuple[str, float]]]] = {}
    docs_of: dict[str, str] = {}
    from tqdm import tqdm

    for qid in tqdm(sorted(data.queries), desc="candidate lists", disable=not progress):
        text = data.queries[qid]
        hits = retriever._search_lists(
            {DENSE: retriever.encoder.encode([text]).dense[0], BM25: bm25_query(text)},
            None,
            None,
            retriever.settings.candidates,
        )
        lists[qid] = {n: [(h.id, h.score) for h in hits[n]] for n in hits}
        for name_hits in hits.values():
            for h in name_hits:
                docs_of[h.id] = h.payload["document_id"]
    folds = {f: fold_ids(list(data.queries), f) for f in ("tune", "check")}
    rows = []
    grid: list[tuple[str, float]] = [("rrf", w) for w in (0.3, 0.4, 0.5, 0.6, 0.7)]
    grid += [("convex", w) for w in (0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8)]
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


def _say(line: str) -> None:
    """CLI output (the report is the product of this command, not a log line)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m retriever.eval", description=__doc__)
    parser.add_argument("--beir", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--split", default="test", help="qrels split (qrels/<split>.tsv)")
    parser.add_argument(
        "--mode", choices=["bm25", "dense", "hybrid", "hybrid+rerank"], default="hybrid"
    )
    parser.add_argument("--fold", choices=["all", "tune", "check"], default="all")
    parser.add_argument("--max-queries", type=int, default=0, help="only the first N queries")
    parser.add_argument("--tune", action="store_true", help="grid-search the fusion instead")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    data = load_beir(args.beir, args.split)
    progress = not args.quiet
    retriever, meta = open_index(data, settings, args.beir / "corpus.jsonl", progress)
    try:
        if args.tune:
            rows = _tune(retriever, data, progress)
            _say(f"{'fusion':8} {'dense_w':>8} {'tune nDCG@10':>13} {'check nDCG@10':>14}")
            for row in rows:
                _say(
                    f"{row['fusion']:8} {row['dense_weight']:8.2f} "
                    f"{row['tune ndcg@10']:13.4f} {row['check ndcg@10']:14.4f}"
                )
            best = max(rows, key=lambda r: r["tune ndcg@10"])
            _say(
                f"best on the tune fold: FUSION={best['fusion']} "
                f"HYBRID_DENSE_WEIGHT={best['dense_weight']}"
            )
            if args.json:
                _say(json.dumps({"tuning": rows, "best": best}))
            return 0
        ids = fold_ids(list(data.queries), cast(Fold, args.fold))
        if args.max_queries:
            ids = ids[: args.max_queries]
        if not ids:
            logger.error("no queries of split %r in %s", args.split, args.beir)
            return 1
        mode = args.mode

        def search(text: str) -> Sequence[Any]:
            return retriever.search(text, owner=None, k=CHUNK_DEPTH, mode=mode)

        search("warm-up query")  # first call loads lazily built state; not timed
        cpu_start = time.process_time()
        run, latencies = run_queries(search, data.queries, ids, progress, desc=mode)
        cpu_ms = (time.process_time() - cpu_start) * 1000 / len(ids)
        scores = evaluate(data.qrels, run)
        report = {
            **{m: round(v, 4) for m, v in scores.items()},
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p95_ms": round(float(np.percentile(latencies, 95)), 2),
            "index_docs_per_s": meta["index_docs_per_s"],
            "mode": mode,
            "queries": len(ids),
        }
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
        if args.json:
            _say(json.dumps(report))
        return 0
    finally:
        retriever.client.close()


if __name__ == "__main__":
    sys.exit(main())
