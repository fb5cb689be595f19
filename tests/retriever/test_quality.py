"""Retrieval quality on a fixed slice of SciFact's development split, and the eval CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from retriever.eval import doc_run, evaluate, main
from retriever.parsing import ParsedDocument, Section

pytestmark = pytest.mark.slow


def ndcg_by_mode(retriever: Any, queries: dict, qrels: dict) -> dict[str, float]:
    scores = {}
    for mode in ("bm25", "dense", "hybrid"):
        run = {
            qid: doc_run(retriever.search(text, owner=None, k=100, mode=mode))
            for qid, text in queries.items()
        }
        scores[mode] = evaluate(qrels, run)["ndcg@10"]
    return scores


def test_hybrid_finds_what_each_single_signal_misses(retriever: Any) -> None:
    # An exact code only keyword search pins down, and a paraphrase with no shared word
    # that only the embedding bridges: the fused list must rank both answers first.
    faults = {
        "E4471": "the outlet valve is stuck closed",
        "E4417": "the inlet valve is stuck open",
        "E7441": "the outlet valve sensor is unplugged",
        "E1447": "the outlet valve motor is worn out",
    }
    for code, meaning in faults.items():
        retriever.ingest_text(
            f"Fault {code} on the pump controller: {meaning}.", title=code, owner="u"
        )
    retriever.ingest_text(
        "Felines slumber for twelve to sixteen hours a day.", title="felines", owner="u"
    )
    retriever.ingest_text("Dogs need a walk at least twice a day.", title="dogs", owner="u")

    def top(query: str, mode: str) -> list[str]:
        return [r.title for r in retriever.search(query, owner="u", k=3, mode=mode)]

    assert top("How long do cats sleep?", "bm25") == []  # no word in common
    assert top("How long do cats sleep?", "hybrid")[0] == "felines"
    assert top("What does fault E4471 mean?", "bm25")[0] == "E4471"
    assert top("What does fault E4471 mean?", "hybrid")[0] == "E4471"


def test_hybrid_quality_on_scifact(retriever: Any, scifact_small: tuple) -> None:
    # Measured on this slice: bm25 0.814, dense 0.873, hybrid 0.883 (int8 MiniLM). The
    # int8 kernels onnxruntime picks differ by CPU: another machine measured dense 0.879,
    # hybrid 0.870. So hybrid must clearly beat keyword search and stay within that spread
    # of dense; whether fusion beats dense is measured on all of SciFact in bench/.
    docs, queries, qrels = scifact_small
    retriever.ingest_documents(
        [
            (ParsedDocument(d["title"], d["_id"], [Section(d["text"], None, False)]), d["_id"])
            for d in docs
        ],
        owner="beir",
        collection="scifact",
    )
    scores = ndcg_by_mode(retriever, queries, qrels)
    assert scores["hybrid"] > scores["bm25"] + 0.03, scores
    assert scores["bm25"] > 0.7 and scores["dense"] > 0.8, scores
    assert scores["hybrid"] > scores["dense"] - 0.015, scores


def test_eval_cli_prints_a_json_line_and_reuses_its_index(
    beir_folder: Path,
    eval_settings: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--beir", str(beir_folder), "--split", "train", "--mode", "hybrid", "--json", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert set(report) == {
        "ndcg@10",
        "recall@100",
        "mrr@10",
        "p50_ms",
        "p95_ms",
        "index_docs_per_s",
        "mode",
        "queries",
    }
    assert report["mode"] == "hybrid" and report["queries"] == 10
    assert 0.4 < report["ndcg@10"] <= 1 and report["recall@100"] >= report["ndcg@10"] * 0.9
    assert 0 < report["p50_ms"] <= report["p95_ms"] and report["index_docs_per_s"] > 0
    assert any(line.strip().startswith("ndcg@10") for line in out[:-1])  # human-readable too

    # Second run: the cached index is reused, not rebuilt.
    assert main([*argv[:4], "--mode", "bm25", "--json", "--quiet"]) == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert "cached index" in "\n".join(again)
    assert json.loads(again[-1])["index_docs_per_s"] == report["index_docs_per_s"]
