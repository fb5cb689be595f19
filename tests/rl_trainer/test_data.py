from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.store import open_database
from app.store.db import Database
from rl_trainer.config import Recipe, load_recipe, recipe_for_model
from rl_trainer.data import build_data, read_snapshot
from tests.rl_trainer.store import add_turn, add_user


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'flywheel.db'}")


def test_dpo_pairs_from_corrections_and_ratings_leave_out_the_untrusted_and_silent(
    db: Database, tmp_path: Path
) -> None:
    good, bad = add_user(db, "good"), add_user(db, "troll", trusted=False)
    corrected = add_turn(
        db, good, "When does water boil?", "no idea", rating=-1, corrected="[1] At 100 C."
    )
    up = add_turn(db, good, "What is Rust?", "[1] A language.", rating=1)
    down = add_turn(db, good, "what is  rust?", "A fish.", rating=-1)  # same question, normalised
    silent = add_turn(db, good, "Hello?", "Hi.")  # no rating, no judgment
    troll = add_turn(db, bad, "What is Rust?", "A fish.", rating=1, corrected="A fish!")
    snap = build_data(
        db, Recipe(algo="dpo", heldout_fraction=0.0, judge="rule:leading_citation"), tmp_path / "s"
    )
    by_source = {r["source"]: r for r in snap.train}
    assert len(snap.train) == 2
    assert by_source["correction"]["chosen"][0]["content"] == "[1] At 100 C."
    assert by_source["correction"]["rejected"][0]["content"] == "no idea"
    assert by_source["correction"]["prompt"][0]["role"] == "system"  # the exact stored prompt
    assert by_source["scores"]["chosen"][0]["content"] == "[1] A language."
    assert by_source["scores"]["rejected"][0]["content"] == "A fish."
    assert snap.counts["untrusted"] == 1 and snap.counts["no_signal"] == 1
    assert set(snap.turn_ids["train"]) == {corrected.id, up.id, down.id}
    assert silent.id not in snap.turn_ids["train"] and troll.id not in snap.turn_ids["train"]
    again = read_snapshot(tmp_path / "s")
    assert again.train == snap.train and again.turn_ids == snap.turn_ids


def test_ratings_are_capped_per_user_per_day(db: Database, tmp_path: Path) -> None:
    user = add_user(db, "eager")
    day = datetime(2026, 1, 5, 12, tzinfo=UTC)
    for i in range(5):
        add_turn(db, user, f"q{i}?", f"a{i}", rating=1, when=day + timedelta(minutes=i))
    add_turn(db, user, "next day?", "a", rating=1, when=day + timedelta(days=1))
    recipe = Recipe(
        algo="grpo",
        heldout_fraction=0.0,
        max_ratings_per_user_per_day=2,
        rewards={"citation_validity": 1.0},
    )
    snap = build_data(db, recipe, tmp_path / "s")
    assert snap.counts["ratings_over_cap"] == 3
    assert len(snap.train) == 3  # two on the first day, one the next
    assert {r["num_sources"] for r in snap.train} == {1}


def test_heldout_is_split_by_thread_and_never_trained_on(db: Database, tmp_path: Path) -> None:
    user = add_user(db, "u")
    for t in range(8):
        thread = f"thread{t:02d}".ljust(32, "0")
        for i in range(2):
            add_turn(db, user, f"q{t}-{i}?", "a", thread_id=thread, judged=0.5 * i)
    recipe = Recipe(algo="grpo", heldout_fraction=0.25, rewards={"citation_validity": 1.0})
    snap = build_data(db, recipe, tmp_path / "s")
    held_threads = {r["thread_id"] for r in snap.heldout}
    assert len(held_threads) == 2 and len(snap.heldout) == 4 and len(snap.train) == 12
    assert not set(snap.turn_ids["train"]) & set(snap.turn_ids["heldout"])
    # Deterministic: the same store gives the same split.
    assert build_data(db, recipe, tmp_path / "s2").turn_ids == snap.turn_ids


def test_gsm8k_rows_come_from_the_shared_file(db: Database, tmp_path: Path) -> None:
    path = Path("/work/shared/data/gsm8k/train.jsonl")
    if not path.is_file():
        pytest.skip("shared GSM8K data not present")
    recipe = load_recipe("gsm8k-grpo", dataset_limit=20, heldout_fraction=0.1)
    snap = build_data(db, recipe, tmp_path / "s", dataset_path=path)
    assert len(snap.train) == 18 and len(snap.heldout) == 2
    assert snap.train[0]["answer"].rstrip().split("####")[-1].strip().isdigit()
    assert "####" in snap.train[0]["prompt"][0]["content"]


def test_recipes_load_and_bad_ones_say_what_to_fix(tmp_path: Path) -> None:
    bundled = ("tiny-dpo", "tiny-grpo", "qwen2.5-1.5b-dpo", "qwen2.5-1.5b-grpo", "gsm8k-grpo")
    for name in (*bundled, "smollm2-dpo", "smollm2-grpo"):
        assert load_recipe(name).algo in ("dpo", "grpo")
    # The online loop's recipe follows the served model when ONLINE_RECIPE names none.
    assert recipe_for_model("smollm2") == "smollm2-dpo" and recipe_for_model("tiny") == "tiny-dpo"
    assert recipe_for_model("Qwen/Qwen2.5-1.5B-Instruct") is None
    assert load_recipe(recipe_for_model("smollm2")).max_steps <= 4  # minutes on 2 CPU cores
    with pytest.raises(ValueError, match="at least 2 generations"):
        Recipe(algo="grpo", num_generations=1)
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        Recipe(algo="grpo", per_device_train_batch_size=3, num_generations=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo: dpo\nlearning_rte: 0.1\n")
    with pytest.raises(ValueError, match="unknown recipe keys \\['learning_rte'\\]"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError, match="bundled recipes"):
        load_recipe("no-such-recipe")
    assert all(Recipe.help().values())  # every field documents itself


class LongerWins:
    """A pairwise judge that prefers the longer answer (decisive on random samples)."""

    model = "longer"
    rubric_version = "test"

    def compare(self, messages, a, b, info):  # type: ignore[no-untyped-def]
        return 1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5


@pytest.mark.slow
def test_fresh_pairs_are_sampled_from_the_server_and_ranked_by_the_judge(
    db: Database, tmp_path: Path, model_server
) -> None:  # type: ignore[no-untyped-def]
    from backend.client import ModelClient

    user = add_user(db, "u")
    for i in range(3):
        add_turn(db, user, f"question {i}?", "an answer", judged=0.5)
    recipe = Recipe(
        algo="dpo",
        heldout_fraction=0.0,
        fresh_pairs=3,
        max_completion_length=16,
        overlong_buffer=4,
        judge="rule:leading_citation",
    )
    with ModelClient(model_server.url, api_key=model_server.key) as client:
        base = next(m.id for m in client.list_models() if m.parent is None)
        snap = build_data(db, recipe, tmp_path / "s", sampler=(client, base, LongerWins()))
    fresh = [r for r in snap.train if r["source"] == "fresh"]
    assert fresh and snap.counts["pairs_fresh"] == len(fresh)
    for row in fresh:
        assert len(row["chosen"][0]["content"]) > len(row["rejected"][0]["content"])
        assert row["prompt"][0]["role"] == "system" and row["turn_ids"]
