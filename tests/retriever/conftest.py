"""Fixtures: a retriever on a fresh local-mode Qdrant, and a small SciFact subset."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export of MiniLM per test session."""
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture
def make_settings(tmp_path: Path, encoder_cache: Path) -> Callable[..., Any]:
    """Settings rooted in this test's tmp dir; keyword arguments override fields."""
    from retriever.settings import RetrieverSettings

    def make(**overrides: Any) -> RetrieverSettings:
        values: dict[str, Any] = {
            "DATA_DIR": tmp_path / "data",
            "EMBEDDING_CACHE_DIR": encoder_cache,
        }
        values.update(overrides)
        return RetrieverSettings(**values)

    return make


@pytest.fixture
def make_retriever(make_settings: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Build retrievers on local-mode Qdrant; every client is closed afterwards."""
    from retriever.qdrant import open_client
    from retriever.service import Retriever

    clients = []

    def make(native_search: bool | None = None, **overrides: Any) -> Retriever:
        settings = make_settings(**overrides)
        client = open_client(settings)
        clients.append(client)
        return Retriever(client, settings, native_search=native_search)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def eval_settings(make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings rooted in this test's tmp dir, as ``retriever.eval``'s CLI reads them."""
    from retriever import eval as eval_module

    settings = make_settings()
    monkeypatch.setattr(eval_module, "get_settings", lambda: settings)
    return settings


@pytest.fixture
def retriever(make_retriever: Callable[..., Any]) -> Any:
    """A retriever with default settings on an empty store."""
    return make_retriever()


def scifact_subset(n_queries: int, n_docs: int) -> tuple[list[dict], dict, dict]:
    """A fixed small slice of SciFact's train (development) split.

    The first ``n_queries`` queries (by id) that have judgements, every document judged
    relevant to them, and the first other documents of the corpus up to ``n_docs``.
    """
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate((SCIFACT / "qrels" / "train.tsv").open()):
        if n == 0:
            continue
        qid, did, score = line.split()
        qrels.setdefault(qid, {})[did] = int(score)
    queries = {}
    for line in (SCIFACT / "queries.jsonl").open():
        row = json.loads(line)
        if row["_id"] in qrels:
            queries[row["_id"]] = row["text"]
    chosen = sorted(queries, key=int)[:n_queries]
    queries = {q: queries[q] for q in chosen}
    qrels = {q: qrels[q] for q in chosen}
    wanted = {d for rel in qrels.values() for d in rel}
    corpus = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    docs = [d for d in corpus if d["_id"] in wanted]
    docs += [d for d in corpus if d["_id"] not in wanted][: n_docs - len(docs)]
    return docs, queries, qrels


@pytest.fixture(scope="session")
def scifact_small() -> tuple[list[dict], dict, dict]:
    """(docs, queries, qrels): 40 development queries over 300 documents."""
    if not SCIFACT.is_dir():
        pytest.skip(f"SciFact data not found at {SCIFACT}")
    return scifact_subset(40, 300)


@pytest.fixture
def beir_folder(tmp_path: Path) -> Path:
    """10 development queries over 60 documents, written as a BEIR folder."""
    if not SCIFACT.is_dir():
        pytest.skip(f"SciFact data not found at {SCIFACT}")
    docs, queries, qrels = scifact_subset(10, 60)
    folder = tmp_path / "scifact-small"
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text, "metadata": {}}) + "\n")
    with (folder / "qrels" / "train.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, rel in qrels.items():
            for did, score in rel.items():
                f.write(f"{qid}\t{did}\t{score}\n")
    return folder
