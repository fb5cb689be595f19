"""Honest training counts: long RAG rows are shortened in their sources, never dropped
silently, and nothing left to train on is a clear error before any model loads."""

import json
from pathlib import Path
from typing import Any

import pytest

from app.agent import prompts
from app.store.prompt_data import parse_user_turn
from rl_trainer.config import load_recipe
from rl_trainer.data import DataError, Snapshot
from rl_trainer.fit import NO_ROOM, fit_rows, token_count
from rl_trainer.train import FIT_FILE, load_tokenizer, train

QUESTION = "When does water boil at sea level?"
ANSWER = "[1] Water boils at 100 degrees Celsius at sea level."
FILLER = "Boiling points change with pressure, altitude and dissolved salts. " * 12


def rag_row(n_sources: int, answer: str = ANSWER, turn: str = "t1") -> dict[str, Any]:
    """A DPO row shaped like the agent's prompts: instruction, history, fenced sources."""
    chunks = [{"title": f"doc {i}", "text": f"Fact {i}. {FILLER}"} for i in range(n_sources)]
    history = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! Ask me about your documents."},
    ]
    return {
        "prompt": [
            {"role": "system", "content": prompts.ANSWER_SYSTEM},
            *history,
            {"role": "user", "content": prompts.user_message(QUESTION, chunks, [])},  # type: ignore[arg-type]
        ],
        "chosen": [{"role": "assistant", "content": answer}],
        "rejected": [{"role": "assistant", "content": "I do not know."}],
        "turn_ids": [turn],
    }


def pair_tokens(tokenizer: Any, row: dict[str, Any]) -> int:
    return max(
        token_count(tokenizer, row["prompt"] + row[k], generation_prompt=False)
        for k in ("chosen", "rejected")
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_chat_model: Path) -> Any:
    return load_tokenizer(str(tiny_chat_model))


def test_a_long_row_loses_trailing_sources_never_the_question_or_answers(
    tokenizer: Any,
) -> None:
    row = rag_row(5)
    full = pair_tokens(tokenizer, row)
    bare = pair_tokens(tokenizer, rag_row(0))
    budget = (full + bare) // 2  # room for about half the sources
    kept, report = fit_rows([row, rag_row(0, turn="t2")], tokenizer, algo="dpo", max_length=budget)

    assert report.given == 2 and report.kept == 2 and report.shortened == 1 and not report.dropped
    fitted = kept[0]
    assert pair_tokens(tokenizer, fitted) <= budget < full
    assert fitted["chosen"] == row["chosen"] and fitted["rejected"] == row["rejected"]
    assert fitted["prompt"][:3] == row["prompt"][:3]  # instruction and history untouched
    turn = parse_user_turn(fitted["prompt"][-1]["content"])
    assert turn.question == QUESTION
    assert 1 <= len(turn.sources) < 5
    # The sources that remain keep their numbers, so "[1]" in the answer still points right.
    assert [s.split(" ", 1)[0] for s in turn.sources] == [
        f"[{i}]" for i in range(1, len(turn.sources) + 1)
    ]
    assert report.sources_removed == 5 - len(turn.sources)
    assert kept[1] is not None and report.longest_kept <= budget


def test_a_row_too_long_without_sources_is_dropped_and_counted(tokenizer: Any) -> None:
    long_answer = "[1] " + "Water boils when its vapour pressure equals the air's. " * 40
    rows = [rag_row(3, long_answer, turn="long"), rag_row(3, turn="ok")]
    budget = pair_tokens(tokenizer, rag_row(0)) + 20
    kept, report = fit_rows(rows, tokenizer, algo="dpo", max_length=budget)
    assert len(kept) == 1 and kept[0]["turn_ids"] == ["ok"]
    assert report.dropped == {NO_ROOM: 1} and report.dropped_turn_ids == ["long"]
    assert report.fewest_tokens_needed == pair_tokens(tokenizer, rag_row(0, long_answer))
    assert "dropped 1 (too long even without sources: 1)" in report.text("pairs")


def test_grpo_prompts_keep_room_for_the_completion_and_count_their_sources(
    tokenizer: Any,
) -> None:
    row = {"prompt": rag_row(5)["prompt"], "num_sources": 5, "answerable": None, "answer": None}
    prompt_only = token_count(tokenizer, row["prompt"], generation_prompt=True)
    kept, report = fit_rows(
        [row], tokenizer, algo="grpo", max_length=prompt_only, completion_tokens=64
    )
    assert report.kept == 1 and report.shortened == 1
    fitted = kept[0]
    assert token_count(tokenizer, fitted["prompt"], generation_prompt=True) + 64 <= prompt_only
    assert fitted["num_sources"] == len(parse_user_turn(fitted["prompt"][-1]["content"]).sources)


def test_nothing_left_to_train_on_is_a_clear_error_before_training(
    tiny_chat_model: Path, tmp_path: Path
) -> None:
    recipe = load_recipe("tiny-dpo", max_length=64)
    snapshot = Snapshot(tmp_path / "data", "dpo", [rag_row(2), rag_row(1, turn="t2")], [])
    with pytest.raises(DataError, match=r"none of the 2 training pairs fits max_length=64") as err:
        train(recipe, snapshot, str(tiny_chat_model), tmp_path / "run")
    assert "--set max_length=" in str(err.value)
    counts = json.loads((tmp_path / "run" / FIT_FILE).read_text())
    assert counts["kept"] == 0 and counts["dropped"] == {NO_ROOM: 2}
    assert not (tmp_path / "run" / "adapter").exists()


@pytest.mark.slow
def test_long_rag_pairs_are_trained_not_silently_dropped(
    tiny_chat_model: Path, tmp_path: Path
) -> None:
    """Every pair is longer than max_length with its sources, as real RAG prompts are."""
    tokenizer = load_tokenizer(str(tiny_chat_model))
    rows = [rag_row(4, turn=f"t{i}") for i in range(4)]
    recipe = load_recipe("tiny-dpo", init="fresh", max_steps=2)
    assert all(pair_tokens(tokenizer, r) > recipe.max_length for r in rows)
    result = train(
        recipe, Snapshot(tmp_path / "data", "dpo", rows, []), str(tiny_chat_model), tmp_path / "r"
    )
    assert result.fit is not None
    assert result.fit.kept == 4 and result.fit.shortened == 4 and not result.fit.dropped
    assert result.metrics["train_loss"] > 0 and len(result.step_times) == 2
