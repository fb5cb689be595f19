"""Searching: dense and keyword lists, filtered inside the search, fused, optionally reranked.

Each list is filtered by owner, collection and visibility before ranking, so a chunk the
caller may not see can never be returned. In local mode the in-process mirror answers
(exact, ~100x faster than local Qdrant); with a Qdrant server, Qdrant does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Required, TypedDict

import numpy as np
from qdrant_client import QdrantClient, models

from retriever.encoders import DenseEncoder, get_reranker
from retriever.fusion import CJK_WEIGHTS, UNTUNED_CJK_WEIGHT, dense_weight, fuse
from retriever.keyword import Sparse, bm25_query
from retriever.local_mirror import LocalMirror
from retriever.qdrant import BM25, DENSE, LEXICAL, match_fields
from retriever.results import MODES, Mode, SearchResult
from retriever.settings import RetrieverSettings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Hit:
    id: str
    score: float
    payload: dict[str, Any]


class SearchOptions(TypedDict, total=False):
    """Keyword options of ``Searcher.search``, for callers that pass them through."""

    owner: Required[str | None]
    collection: str | None
    k: int
    mode: Mode


class Searcher:
    """Ranks the chunks a caller may see for a query."""

    def __init__(
        self,
        client: QdrantClient,
        settings: RetrieverSettings,
        encoder: DenseEncoder,
        mirror: LocalMirror | None,
        *,
        lexical: bool,
    ) -> None:
        """``mirror``: search it instead of Qdrant (local mode); ``lexical``: BGE-M3's list."""
        self.client = client
        self.settings = settings
        self.collection_name = settings.qdrant_collection
        self.encoder = encoder
        self._mirror = mirror
        self._lexical = lexical
        self._warned_no_reranker = False

    def search(
        self,
        query: str,
        *,
        owner: str | None,
        collection: str | None = None,
        k: int = 5,
        mode: Mode = "hybrid",
    ) -> list[SearchResult]:
        """The ``k`` best chunks for ``query`` among those ``owner`` may see.

        ``owner=None`` searches every owner (evaluation and administration only). An empty
        query or collection gives an empty list.
        """
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {MODES}")
        if not query.strip() or k <= 0:
            return []
        depth = max(k, self.settings.candidates) if mode.startswith("hybrid") else k
        if mode in ("dense", "bm25"):
            hits = self.lists(query, (mode,), owner, collection, depth)[mode][:k]
            return [_result(h, {mode: h.score}) for h in hits]
        lists = self.lists(query, (DENSE, BM25, LEXICAL), owner, collection, depth)
        return self._hybrid(query, lists, k, rerank=mode == "hybrid+rerank")

    def lists(
        self,
        query: str,
        signals: Sequence[str],
        owner: str | None,
        collection: str | None,
        limit: int,
    ) -> dict[str, list[_Hit]]:
        """The ranked candidate lists of ``query`` for ``signals`` (dense, bm25, lexical).

        The lexical list exists only with BGE-M3; fusion tuning reads these lists directly.
        """
        requests: dict[str, np.ndarray | Sparse] = {}
        if DENSE in signals or LEXICAL in signals:
            encoded = self.encoder.encode([query], query=True)
            if DENSE in signals:
                requests[DENSE] = encoded.dense[0]
            if LEXICAL in signals and self._lexical and encoded.lexical:
                requests[LEXICAL] = encoded.lexical[0]
        if BM25 in signals:
            requests[BM25] = bm25_query(query)
        return self._search_lists(requests, owner, collection, limit)

    def dense_weight(self, query: str) -> float:
        """Convex fusion's dense weight for ``query``, by its language (see ``fusion``)."""
        cjk = self.settings.dense_weight_cjk
        if cjk is None:
            cjk = CJK_WEIGHTS.get(self.settings.embedder_key, UNTUNED_CJK_WEIGHT)
        return dense_weight(query, self.settings.dense_weight, cjk)

    def _hybrid(
        self, query: str, lists: dict[str, list[_Hit]], k: int, rerank: bool
    ) -> list[SearchResult]:
        weight = self.dense_weight(query)
        keyword = [BM25, LEXICAL] if LEXICAL in lists else [BM25]
        names = [DENSE, *keyword]
        weights = [weight] + [(1 - weight) / len(keyword)] * len(keyword)
        fused = fuse(
            [[(h.id, h.score) for h in lists[n]] for n in names],
            weights,
            method=self.settings.fusion,
        )
        by_id: dict[str, _Hit] = {}
        per_list: dict[str, dict[str, float]] = {}
        for name in names:
            for hit in lists[name]:
                by_id.setdefault(hit.id, hit)
                per_list.setdefault(hit.id, {})[name] = hit.score
        keep = max(k, self.settings.rerank_candidates) if rerank else k
        results = [_result(_Hit(i, s, by_id[i].payload), per_list[i]) for i, s in fused[:keep]]
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
    ) -> dict[str, list[_Hit]]:
        if self._mirror is not None:
            snap = self._mirror.snapshot()
            allowed = snap.mask(owner, collection)
            out: dict[str, list[_Hit]] = {}
            for name, query in requests.items():
                if isinstance(query, Sparse):
                    pairs = snap.search_sparse(name, query, allowed, limit)
                else:
                    pairs = snap.search_dense(query, allowed, limit)
                out[name] = [_Hit(snap.ids[i], s, snap.payloads[i]) for i, s in pairs]
            return out
        flt = models.Filter(must=match_fields(live=True, owner=owner, collection=collection))
        return self._search_qdrant(requests, flt, limit)

    def _search_qdrant(
        self, requests: dict[str, np.ndarray | Sparse], flt: models.Filter, limit: int
    ) -> dict[str, list[_Hit]]:
        names = [n for n, q in requests.items() if not (isinstance(q, Sparse) and not q.indices)]
        batch = [
            models.QueryRequest(
                query=(
                    models.SparseVector(indices=q.indices, values=q.values)
                    if isinstance(q, Sparse)
                    else q.tolist()
                ),
                using=name,
                filter=flt,
                limit=limit,
                with_payload=True,
            )
            for name in names
            for q in [requests[name]]
        ]
        responses = self.client.query_batch_points(self.collection_name, batch) if batch else []
        out: dict[str, list[_Hit]] = {name: [] for name in requests}
        for name, response in zip(names, responses, strict=True):
            out[name] = [
                _Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points
            ]
        return out


def _result(hit: _Hit, scores: dict[str, float]) -> SearchResult:
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
