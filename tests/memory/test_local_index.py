"""The per-user index answers exactly as Qdrant's own filtered search does, writes included."""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from memory import MemorySettings
from memory.local_index import UserScopedStore, is_local
from memory.store import import_mem0

DIMS = 16
USERS = ["ana", "ben", "cy"]


def mem0_store(client: QdrantClient) -> Any:
    from mem0.vector_stores.qdrant import Qdrant

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Qdrant(collection_name="memories", embedding_model_dims=DIMS, client=client)


def add(store: Any, rng: np.random.Generator, user: str, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    store.insert(
        vectors=rng.normal(size=(n, DIMS)).tolist(),
        payloads=[{"user_id": user, "data": f"{user} fact {i}"} for i in range(n)],
        ids=ids,
    )
    return ids


def same_answers(index: UserScopedStore, raw: Any, rng: np.random.Generator) -> None:
    for user in [*USERS, "nobody"]:
        for _ in range(5):
            query = rng.normal(size=DIMS).tolist()
            ours = index.search("q", query, top_k=7, filters={"user_id": user})
            theirs = raw.search("q", query, top_k=7, filters={"user_id": user})
            assert [str(p.id) for p in ours] == [str(p.id) for p in theirs]
            assert np.allclose([p.score for p in ours], [p.score for p in theirs], atol=1e-5)
            assert [p.payload for p in ours] == [p.payload for p in theirs]
        listed, _ = index.list(filters={"user_id": user}, top_k=1000)
        expected, _ = raw.list(filters={"user_id": user}, top_k=1000)
        assert {(str(r.id), r.payload["data"]) for r in listed} == {
            (str(r.id), r.payload["data"]) for r in expected
        }


@pytest.fixture
def client(memory_settings: MemorySettings) -> QdrantClient:
    import_mem0(memory_settings)  # mem0's files go to the test data dir, not ~/.mem0
    return QdrantClient(location=":memory:")


def test_index_matches_qdrant_through_writes(client: QdrantClient) -> None:
    rng = np.random.default_rng(7)
    raw = mem0_store(client)
    before = {user: add(raw, rng, user, 30) for user in USERS}  # present before the index

    index = UserScopedStore(mem0_store(client))
    same_answers(index, raw, rng)

    added = add(index, rng, "ana", 12)
    index.delete(vector_id=before["ben"][0])
    index.delete(vector_id=added[0])
    index.update(
        vector_id=before["cy"][1],
        vector=rng.normal(size=DIMS).tolist(),
        payload={"user_id": "cy", "data": "cy changed"},
    )
    index.update(vector_id=before["ana"][2], payload={"user_id": "ben", "data": "moved"})
    same_answers(index, raw, rng)


def test_other_filters_go_to_qdrant(client: QdrantClient) -> None:
    rng = np.random.default_rng(3)
    index = UserScopedStore(mem0_store(client))
    index.insert(
        vectors=rng.normal(size=(2, DIMS)).tolist(),
        payloads=[{"user_id": "ana", "run_id": "r1"}, {"user_id": "ana", "run_id": "r2"}],
        ids=[str(uuid.uuid4()), str(uuid.uuid4())],
    )
    hits = index.search(
        "q", rng.normal(size=DIMS).tolist(), filters={"user_id": "ana", "run_id": "r2"}
    )
    assert [p.payload["run_id"] for p in hits] == ["r2"]


def test_local_mode_detection(tmp_path: Any) -> None:
    assert is_local(QdrantClient(location=":memory:"))
    on_disk = QdrantClient(path=str(tmp_path / "q"))
    assert is_local(on_disk)
    on_disk.close()
    assert not is_local(QdrantClient(url="http://127.0.0.1:1", check_compatibility=False))
