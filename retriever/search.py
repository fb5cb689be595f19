"""Searching: dense and keyword lists, fused by the query's language, optionally reranked.

Each list is filtered by owner, collection and visibility inside the search (in the local
mirror, or in Qdrant itself with a server). The lists are fused with a dense weight that
depends on how much of the query is Chinese, Japanese or Korean (``fusion.dense_weight``),
because an encoder can be useless in one language and strong in another: the keyword
side then carries the query alone instead of being dragged down by noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from retriever.encoders import DenseEncoder, get_reranker
from retriever.fusion import dense_weight, fuse
from retriever.keyword import Sparse, bm25_query
from retriever.local_mirror import LocalMirror
from retriever.qdrant import BM25, DENSE, LEXICAL, match, sparse_vector
from retriever.settings import RetrieverSettings

logger = logging.getLogger(__name__)

Mode = Literal["bm25", "dense", "hybrid", "hybrid+rerank"]
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid", "hybrid+rerank")


@dataclass(slots=True)
class SearchResult:
    """One retrieved chunk with where it came from."""

    chunk_id: str
    document_id: str
    text: str
    score: float
    title: str
    page: int | None
    heading: str | None
    position: int
    collection: str = "default"
    source: str = ""
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Hit:
    """A point found by one list."""

    id: str
    score: float
    payload: dict[str, Any]


class Searcher:
    """Answers queries over one chunk collection."""

    def __init__(
        self,
        client: QdrantClient,
        settings: RetrieverSettings,
        encoder: DenseEncoder,
        mirror: LocalMirror | None,
        *,
        native: bool,
        lexical: bool,
    ) -> None:
        self.client = client
        self.collection_name = settings.qdrant_collection
        self.settings = settings
        self.encoder = encoder
        self._mirror = mirror
        self._native = native or mirror is None
        self._lexical = lexical
        self._warned_no_reranker = False

    def search(
        self, query: str, *, owner: str | None, collection: str | None, k: int, mode: Mode
    ) -> list[SearchResult]:
        """The ``k`` best chunks for ``query`` among those ``owner`` may see."""
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {MODES}")
        if not query.strip() or k <= 0:
            return []
        depth = max(k, self.settings.candidates) if mode.startswith("hybrid") else k
        lists = self.lists(query, owner, collection, depth, dense=mode != "bm25")
        if mode in ("dense", "bm25"):
            hits = lists[DENSE if mode == "dense" else BM25][:k]
            return [_result(h, {mode: h.score}) for h in hits]
        return self._hybrid(query, lists, k, rerank=mode == "hybrid+rerank")

    def lists(
        self,
        query: str,
        owner: str | None,
        collection: str | None,
        limit: int,
        *,
        dense: bool = True,
        keyword: bool = True,
    ) -> dict[str, list[Hit]]:
        """The candidate lists of ``query`` by name (``dense``, ``bm25``, ``lexical``)."""
        requests: dict[str, np.ndarray | Sparse] = {}
        if dense:
            encoded = self.encoder.encode([query], query=True)
            requests[DENSE] = encoded.dense[0]
            if keyword and self._lexical and encoded.lexical:
                requests[LEXICAL] = encoded.lexical[0]
        if keyword:
            requests[BM25] = bm25_query(query)
        return self._search_lists(requests, owner, collection, limit)

    def weight(self, query: str) -> float:
        """The dense list's fusion weight for ``query``."""
        return dense_weight(
            query,
            self.encoder.model_id,
            latin=self.settings.dense_weight,
            cjk=self.settings.dense_weight_cjk,
        )

    def _hybrid(
        self, query: str, lists: dict[str, list[Hit]], k: int, rerank: bool
    ) -> list[SearchResult]:
        weight = self.weight(query)
        keyword = [BM25, LEXICAL] if LEXICAL in lists else [BM25]
        names = [DENSE, *keyword]
        weights = [weight] + [(1 - weight) / len(keyword)] * len(keyword)
        fused = fuse(
            [[(h.id, h.score) for h in lists[n]] for n in names],
            weights,
            method=self.settings.fusion,
        )
        by_id: dict[str, Hit] = {}
        per_list: dict[str, dict[str, float]] = {}
        for name in names:
            for hit in lists[name]:
                by_id.setdefault(hit.id, hit)
                per_list.setdefault(hit.id, {})[name] = hit.score
        keep = max(k, self.settings.rerank_candidates) if rerank else k
        results = [_result(Hit(i, s, by_id[i].payload), per_list[i]) for i, s in fused[:keep]]
        if rerank:
            if self.settings.reranker_model:
                return self._rerank(query, results, k)
            if not self._warned_no_reranker:
                logger.warning("hybrid+rerank asked but RERANKER_MODEL is empty: not reranking")
                self._warned_no_reranker = True
        return results[:k]

    def _rerank(self, query: str, results: list[SearchResult], k: int) -> list[SearchResult]:
        head = results[: self.settings.rerank_candidates]
        scores = get_reranker(self.settings.reranker_model).score(
            query, [f"{r.title}\n{r.text}" for r in head]
        )
        for result, score in zip(head, scores, strict=True):
            result.scores["fused"] = result.score
            result.scores["rerank"] = score
            result.score = score
        head.sort(key=lambda r: -r.score)
        return (head + results[len(head) :])[:k]

    def _search_lists(
        self,
        requests: dict[str, np.ndarray | Sparse],
        owner: str | None,
        collection: str | None,
        limit: int,
    ) -> dict[str, list[Hit]]:
        if not self._native and self._mirror is not None:
            snap = self._mirror.snapshot()
            allowed = snap.mask(owner, collection)
            out: dict[str, list[Hit]] = {}
            for name, query in requests.items():
                if isinstance(query, Sparse):
                    pairs = snap.search_sparse(name, query, allowed, limit)
                else:
                    pairs = snap.search_dense(query, allowed, limit)
                out[name] = [Hit(snap.ids[i], s, snap.payloads[i]) for i, s in pairs]
            return out
        flt = models.Filter(must=match(live=True, owner=owner, collection=collection))
        names = [n for n, q in requests.items() if not (isinstance(q, Sparse) and not q.indices)]
        batch = [
            models.QueryRequest(
                query=sparse_vector(q) if isinstance(q, Sparse) else q.tolist(),
                using=name,
                filter=flt,
                limit=limit,
                with_payload=True,
            )
            for name in names
            for q in [requests[name]]
        ]
        responses = self.client.query_batch_points(self.collection_name, batch) if batch else []
        out = {name: [] for name in requests}
        for name, response in zip(names, responses, strict=True):
            out[name] = [
                Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points
            ]
        return out


def _result(hit: Hit, scores: dict[str, float]) -> SearchResult:
    p = hit.payload
    return SearchResult(
        chunk_id=hit.id,
        document_id=p["document_id"],
        text=p["text"],
        score=hit.score,
        title=p["title"],
        page=p.get("page"),
        heading=p.get("heading"),
        position=int(p["position"]),
        collection=p["collection"],
        source=p.get("source", ""),
        scores=dict(scores),
    )
