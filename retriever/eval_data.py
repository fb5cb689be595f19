"""Evaluation data: a BEIR folder (SciFact) or a SQuAD-style Chinese QA file (CMRC2018).

Both load into one shape, :class:`BeirData`: a corpus of ``{"_id", "title", "text"}``
records, queries by id and graded judgements. For CMRC2018 the passages are the corpus
and each question's own passage is its one relevant document, as the shared data's
README prescribes. ``fold_ids`` cuts a split's queries into fixed tune and check halves.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Fold = Literal["all", "tune", "check"]


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


def load_cmrc(path: Path) -> BeirData:
    """A SQuAD-v1.1-style file (CMRC2018): passages as corpus, questions as queries."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; expected a CMRC2018 (SQuAD-style) JSON file")
    data = json.loads(path.read_text(encoding="utf-8"))
    corpus: list[dict[str, Any]] = []
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            pid = str(paragraph["id"])
            corpus.append(
                {"_id": pid, "title": article.get("title", ""), "text": paragraph["context"]}
            )
            for qa in paragraph["qas"]:
                queries[str(qa["id"])] = qa["question"]
                qrels[str(qa["id"])] = {pid: 1}
    return BeirData(path.parent.resolve().name, corpus, queries, qrels)


def load_dataset(path: Path, split: str) -> tuple[BeirData, Path]:
    """A BEIR folder or a CMRC2018 file, and the file its corpus lives in."""
    if path.is_file() and path.suffix == ".json":
        return load_cmrc(path), path
    return load_beir(path, split), path / "corpus.jsonl"
