"""Documents: dedup, replace, delete, all-or-nothing versions, owner/collection isolation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

V1 = "# Pets\n\nCats sleep sixteen hours a day.\n\n## Dogs\n\nDogs need a daily walk.\n"
V2 = "# Pets\n\nParrots can live for eighty years.\n"


def texts(results: list[Any]) -> str:
    return " ".join(r.text for r in results)


def test_empty_query_and_empty_collection_give_nothing(retriever: Any) -> None:
    assert retriever.search("anything", owner="alice") == []
    retriever.ingest_text(V1, title="pets", owner="alice")
    assert retriever.search("   ", owner="alice") == []
    assert retriever.search("cats", owner="alice", collection="nope") == []
    assert retriever.search("the of and", owner="alice", mode="bm25") == []  # stop words only


def test_unchanged_document_is_a_no_op(retriever: Any) -> None:
    first = retriever.ingest_text(V1, title="pets", owner="alice")
    again = retriever.ingest_text(V1, title="pets", owner="alice")
    assert (first.status, again.status) == ("ingested", "unchanged")
    assert again.document_id == first.document_id and again.chunks == first.chunks
    assert len(retriever.search("cats sleep", owner="alice", k=10)) == first.chunks


def test_changed_document_replaces_all_its_chunks(retriever: Any) -> None:
    first = retriever.ingest_text(V1, title="pets", owner="alice")
    second = retriever.ingest_text(V2, title="pets", owner="alice")
    assert second.status == "replaced" and second.document_id == first.document_id
    found = retriever.search("cats dogs parrots", owner="alice", k=10)
    assert "Parrots" in texts(found)
    assert "Cats" not in texts(found) and "Dogs" not in texts(found)
    [doc] = retriever.list_documents("alice")
    assert doc.content_hash == second.content_hash and doc.chunks == second.chunks


def test_delete_removes_every_chunk(retriever: Any) -> None:
    kept = retriever.ingest_text("Giraffes have long necks.", title="giraffes", owner="alice")
    gone = retriever.ingest_text(V1, title="pets", owner="alice")
    assert retriever.delete_document(gone.document_id, owner="alice") == gone.chunks
    assert retriever.delete_document(gone.document_id, owner="alice") == 0
    found = retriever.search("cats dogs giraffes", owner="alice", k=10)
    assert {r.document_id for r in found} == {kept.document_id}
    assert [d.document_id for d in retriever.list_documents("alice")] == [kept.document_id]


def test_user_b_never_sees_user_a(retriever: Any) -> None:
    a = retriever.ingest_text(V1, title="pets", owner="alice", collection="home")
    retriever.ingest_text("Bob's tax return is due in April.", title="tax", owner="bob")
    for mode in ("bm25", "dense", "hybrid"):
        seen = retriever.search("cats sleep dogs walk", owner="bob", k=50, mode=mode)
        assert all(r.document_id != a.document_id for r in seen), mode
    assert retriever.list_documents("bob")[0].title == "tax"
    assert retriever.delete_document(a.document_id, owner="bob") == 0
    assert retriever.search("cats", owner="alice", k=1)[0].document_id == a.document_id


def test_collection_filter(retriever: Any) -> None:
    retriever.ingest_text("Cats purr when content.", title="cats", owner="alice", collection="x")
    retriever.ingest_text("Cats hunt mice at night.", title="cats2", owner="alice", collection="y")
    only_y = retriever.search("cats", owner="alice", collection="y", k=10)
    assert {r.collection for r in only_y} == {"y"}
    assert {r.collection for r in retriever.search("cats", owner="alice", k=10)} == {"x", "y"}
    assert [d.collection for d in retriever.list_documents("alice", "x")] == ["x"]


def test_state_survives_a_restart(make_retriever: Callable[..., Any]) -> None:
    first = make_retriever()
    doc = first.ingest_text(V1, title="pets", owner="alice")
    first.client.close()
    second = make_retriever()
    assert second.ingest_text(V1, title="pets", owner="alice").status == "unchanged"
    assert second.search("dogs walk", owner="alice", k=1)[0].document_id == doc.document_id


def test_crash_before_switch_leaves_old_version_whole(
    retriever: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever.ingest_text(V1, title="pets", owner="alice")
    real_upsert = retriever.client.upsert

    def crash_on_registry(collection_name: str, points: Any, **kw: Any) -> Any:
        if collection_name.endswith("_documents"):
            raise RuntimeError("power cut")
        return real_upsert(collection_name, points, **kw)

    monkeypatch.setattr(retriever.client, "upsert", crash_on_registry)
    with pytest.raises(RuntimeError, match="power cut"):
        retriever.ingest_text(V2, title="pets", owner="alice")
    monkeypatch.undo()
    found = texts(retriever.search("cats dogs parrots", owner="alice", k=10))
    assert "Cats" in found and "Dogs" in found and "Parrots" not in found
    # The next ingest of the new version completes and cleans up.
    assert retriever.ingest_text(V2, title="pets", owner="alice").status == "replaced"
    assert "Cats" not in texts(retriever.search("cats dogs parrots", owner="alice", k=10))


def test_native_qdrant_search_matches_the_local_mirror(make_retriever: Callable[..., Any]) -> None:
    mirror = make_retriever()
    mirror.ingest_text(V1, title="pets", owner="alice")
    mirror.ingest_text("Cats and dogs are common pets in cities.", title="city", owner="alice")
    mirror.ingest_text("Cats are secret.", title="hidden", owner="bob")
    native = type(mirror)(mirror.client, mirror.settings, native_search=True)
    for mode in ("bm25", "dense", "hybrid"):
        a = mirror.search("cats dogs pets", owner="alice", k=5, mode=mode)
        b = native.search("cats dogs pets", owner="alice", k=5, mode=mode)
        assert [r.chunk_id for r in a] == [r.chunk_id for r in b], mode
        assert [r.score for r in a] == pytest.approx([r.score for r in b], rel=1e-4), mode
        assert all(r.title != "hidden" for r in b)
