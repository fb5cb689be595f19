"""A collection records its embedding model; opening it with another is a clear error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from retriever.qdrant import EmbedderMismatch, open_client
from retriever.service import Retriever


def test_another_embedder_of_the_same_size_is_refused(make_settings: Callable[..., Any]) -> None:
    minilm = make_settings()
    client = open_client(minilm)
    try:
        Retriever(client, minilm).ingest_text("Cats sleep a lot.", title="cats", owner="u")
    finally:
        client.close()

    # multilingual-e5-small also makes 384-dim vectors: only the record tells them apart.
    e5 = make_settings(EMBEDDING_MODEL="multilingual-e5-small", EMBEDDING_THREADS=1)
    client = open_client(e5)
    try:
        with pytest.raises(EmbedderMismatch) as caught:
            Retriever(client, e5)
        message = str(caught.value)
        assert "all-MiniLM-L6-v2" in message and "multilingual-e5-small" in message
        assert "QDRANT_COLLECTION" in message  # says how to get out
        # A new collection name works with the new model.
        fresh = make_settings(
            EMBEDDING_MODEL="multilingual-e5-small",
            EMBEDDING_THREADS=1,
            QDRANT_COLLECTION="chunks_e5",
        )
        retriever = Retriever(client, fresh)
        retriever.ingest_text("长城全长两万多公里。", title="长城", owner="u")
        retriever.ingest_text("Octopuses have three hearts.", title="octopus", owner="u")
        [hit] = retriever.search("长城有多长？", owner="u", k=1, mode="dense")
        assert hit.title == "长城"
        [hit] = retriever.search("how many hearts does an octopus have", owner="u", k=1)
        assert hit.title == "octopus"
    finally:
        client.close()

    # The same model as before opens the old collection as ever.
    client = open_client(minilm)
    try:
        [hit] = Retriever(client, minilm).search("cats", owner="u", k=1)
        assert hit.title == "cats"
    finally:
        client.close()
