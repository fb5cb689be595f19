"""Fusion as a pure function: empty input, duplicates, ties, weights."""

from __future__ import annotations

import pytest

from retriever.fusion import RRF_K, fuse


@pytest.mark.parametrize("method", ["convex", "rrf"])
def test_empty_inputs_give_empty_output(method: str) -> None:
    assert fuse([], method=method) == []  # type: ignore[arg-type]
    assert fuse([[], []], method=method) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["convex", "rrf"])
def test_one_list_keeps_its_order(method: str) -> None:
    ranked = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    assert [i for i, _ in fuse([ranked, []], method=method)] == ["a", "b", "c"]  # type: ignore[arg-type]


def test_rrf_scores_follow_the_formula() -> None:
    fused = dict(fuse([[("a", 9.0), ("b", 1.0)], [("b", 0.5), ("a", 0.1)]], method="rrf"))
    expected = 1 / (RRF_K + 1) + 1 / (RRF_K + 2)
    assert fused["a"] == pytest.approx(expected)
    assert fused["b"] == pytest.approx(expected)


def test_duplicates_in_a_list_count_once_at_their_best() -> None:
    once = fuse([[("a", 1.0), ("b", 0.5)]], method="rrf")
    twice = fuse([[("a", 1.0), ("b", 0.5), ("a", 0.2)]], method="rrf")
    assert once == twice
    convex = dict(fuse([[("a", 1.0), ("b", 0.0), ("a", 0.0)]], method="convex"))
    assert convex == {"a": 1.0, "b": 0.0}


def test_ties_are_broken_by_best_place_then_id() -> None:
    # a and b tie on fused score; b reached place 0 in the second list, a only place 0 in
    # the first: equal best places, so the id decides.
    fused = fuse([[("b", 1.0), ("a", 0.0)], [("a", 1.0), ("b", 0.0)]], method="convex")
    assert [i for i, _ in fused] == ["a", "b"]
    assert fused[0][1] == fused[1][1]
    # Equal scores inside one list: all normalise to 1, order by place.
    same = fuse([[("z", 2.0), ("y", 2.0)]], method="convex")
    assert [i for i, _ in same] == ["z", "y"]


def test_convex_weights_decide_between_lists() -> None:
    dense = [("d1", 0.9), ("k1", 0.1)]
    keyword = [("k1", 20.0), ("d1", 1.0)]
    assert fuse([dense, keyword], [0.8, 0.2])[0][0] == "d1"
    assert fuse([dense, keyword], [0.2, 0.8])[0][0] == "k1"


def test_item_found_by_both_lists_beats_one_found_by_one() -> None:
    fused = fuse([[("x", 1.0), ("both", 0.9)], [("y", 1.0), ("both", 0.95)]], method="rrf")
    assert fused[0][0] == "both"


def test_weights_must_match_lists() -> None:
    with pytest.raises(ValueError, match="2 weights given for 1 lists"):
        fuse([[("a", 1.0)]], [0.5, 0.5])
