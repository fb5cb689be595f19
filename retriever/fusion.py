"""Fusing ranked lists: weighted reciprocal rank or a convex sum of normalised scores.

Why convex by default: on a tuning fold of SciFact's train queries, a weighted sum of
min-max normalised BM25 and cosine scores beat reciprocal rank fusion (RRF, k=60) at every
weight tried, because RRF throws away how far ahead the top hit of a list is. With
all-MiniLM-L6-v2 and BM25: convex at dense weight 0.45 scored nDCG@10 0.754 on the tune
fold (0.718 on the held-back check fold) against 0.730 (0.702) for plain RRF; see the
table ``python -m retriever.eval --tune`` prints. RRF stays available (``FUSION=rrf``).

The dense weight depends on the query's language (:func:`dense_weight`): all-MiniLM-L6-v2
was trained on English only, and on Chinese its list is close to noise, so fused at the
English weight it pulled the keyword list's nDCG@10 down from about 0.97 to 0.31 on
CMRC2018. Each embedding model has a tuned weight for Chinese, Japanese and Korean
queries (``CJK_WEIGHTS``); a mixed query gets a blend of the two weights by its share of
CJK characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from retriever.keyword import cjk_share

Ranked = Sequence[tuple[str, float]]
Method = Literal["convex", "rrf"]

# Convex fusion's dense weight for CJK queries per embedding model, tuned with
# ``python -m retriever.eval --cmrc ... --tune`` on the tune fold of the shared CMRC2018
# trial set (the README has both folds' scores).
CJK_WEIGHTS: dict[str, float] = {
    "all-MiniLM-L6-v2": 0.05,
    "multilingual-e5-small": 0.3,
}
# Any other model: no trust in its vectors outside English until it is measured.
UNTUNED_CJK_WEIGHT = 0.05

# Cormack, Clarke & Büttcher (SIGIR 2009), the constant every RRF implementation uses.
RRF_K = 60


def _minmax(ranked: Ranked) -> dict[str, float]:
    """Scores scaled to [0, 1] within the list; a list of equal scores maps to 1."""
    best: dict[str, float] = {}
    for item, score in ranked:
        if item not in best or score > best[item]:
            best[item] = score
    if not best:
        return {}
    low, high = min(best.values()), max(best.values())
    if high == low:
        return dict.fromkeys(best, 1.0)
    return {item: (score - low) / (high - low) for item, score in best.items()}


def _reciprocal_ranks(ranked: Ranked, k: int) -> dict[str, float]:
    """1 / (k + rank) of each item's first (best) place in the list."""
    out: dict[str, float] = {}
    for rank, (item, _) in enumerate(ranked, start=1):
        out.setdefault(item, 1.0 / (k + rank))
    return out


def fuse(
    ranked_lists: Sequence[Ranked],
    weights: Sequence[float] | None = None,
    method: Method = "convex",
    k: int = RRF_K,
) -> list[tuple[str, float]]:
    """Fuse ranked ``(id, score)`` lists into one, best first.

    Args:
        ranked_lists: each list ordered best first; an id repeated within a list counts once,
            at its best score (convex) or best place (rrf).
        weights: one weight per list (default: all 1).
        method: ``convex`` sums weight x min-max-normalised score; ``rrf`` sums
            weight / (k + rank).
        k: the RRF constant.

    Returns:
        ``(id, fused score)`` pairs; ties are broken by the best place the id reached in
        any list, then by id, so the order is deterministic.
    """
    if weights is None:
        weights = [1.0] * len(ranked_lists)
    if len(weights) != len(ranked_lists):
        raise ValueError(f"{len(weights)} weights given for {len(ranked_lists)} lists")
    fused: dict[str, float] = {}
    best_place: dict[str, int] = {}
    for ranked, weight in zip(ranked_lists, weights, strict=True):
        parts = _minmax(ranked) if method == "convex" else _reciprocal_ranks(ranked, k)
        for item, value in parts.items():
            fused[item] = fused.get(item, 0.0) + weight * value
        for place, (item, _) in enumerate(ranked):
            best_place[item] = min(best_place.get(item, place), place)
    return sorted(fused.items(), key=lambda kv: (-kv[1], best_place[kv[0]], kv[0]))


def dense_weight(query: str, latin: float, cjk: float) -> float:
    """The dense list's weight for ``query``: ``latin`` and ``cjk`` blended by its script.

    A query whose letters are all Latin (or any non-CJK script) gets ``latin``, one in
    Chinese, Japanese or Korean gets ``cjk``, and a mixed one the share-weighted blend.
    """
    share = cjk_share(query)
    return (1 - share) * latin + share * cjk
