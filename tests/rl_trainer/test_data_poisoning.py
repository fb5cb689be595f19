"""No user floods or dominates a snapshot (real SQLite store, the CLI as users run it)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.store import open_database
from app.store.db import Database
from rl_trainer.config import Recipe
from rl_trainer.data import DataError, build_data, read_snapshot
from rl_trainer.pipeline import Report
from tests.rl_trainer.store import add_turn, add_user

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 1, 5, 12, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'flywheel.db'}")


def corrections(db: Database, name: str, n: int) -> tuple[str, list[str]]:
    """A user with ``n`` corrected turns (one DPO pair each), a minute apart."""
    user = add_user(db, name)
    turns = [
        add_turn(
            db,
            user,
            f"{name} question {i}?",
            "no idea",
            rating=-1,
            corrected=f"[1] {name} answer {i}.",
            when=START + timedelta(minutes=i),
        ).id
        for i in range(n)
    ]
    return user, turns


def dpo(**fields: float) -> Recipe:
    return Recipe(algo="dpo", heldout_fraction=0.0, judge="rule:leading_citation", **fields)  # type: ignore[arg-type]


def test_a_users_turns_are_capped_keeping_the_most_recent(db: Database, tmp_path: Path) -> None:
    flood, flood_turns = corrections(db, "flood", 6)
    _, other_turns = corrections(db, "other", 2)
    snap = build_data(db, dpo(max_turns_per_user=3, max_user_share=1.0), tmp_path / "s")
    assert snap.counts["turns_over_cap"] == 3
    assert set(snap.turn_ids["train"]) == set(flood_turns[3:]) | set(other_turns)
    assert snap.user_shares[flood] == 0.6


def test_each_users_share_is_in_the_snapshot_manifest_and_report(
    db: Database, tmp_path: Path
) -> None:
    ana, _ = corrections(db, "ana", 2)
    ben, _ = corrections(db, "ben", 1)
    cy, _ = corrections(db, "cy", 1)
    snap = build_data(db, dpo(), tmp_path / "s")
    assert snap.user_shares == {ana: 0.5, ben: 0.25, cy: 0.25}
    assert snap.counts["users"] == 3
    assert snap.summary()["user_shares"] == snap.user_shares  # goes into the manifest
    assert read_snapshot(tmp_path / "s").user_shares == snap.user_shares
    report = Report("runs/x", data=snap.counts, users=snap.user_shares).text()
    assert f"users (share of training rows): {ana} 50%, {ben} 25%, {cy} 25%" in report


def test_a_snapshot_one_user_dominates_is_refused_with_what_to_change(
    db: Database, tmp_path: Path
) -> None:
    loud, _ = corrections(db, "loud", 3)
    corrections(db, "quiet", 1)
    with pytest.raises(DataError) as refused:
        build_data(db, dpo(), tmp_path / "s")
    message = str(refused.value)
    assert f"user {loud} holds 75% of the training rows, above max_user_share=0.5" in message
    assert "--set max_user_share=0.75" in message and "max_turns_per_user" in message
    assert not (tmp_path / "s").exists()  # nothing to train on by mistake
    # The suggested limit is enough; so is the cap, which brings the user back in line.
    assert build_data(db, dpo(max_user_share=0.75), tmp_path / "a").user_shares[loud] == 0.75
    assert build_data(db, dpo(max_turns_per_user=1), tmp_path / "b").user_shares[loud] == 0.5


def test_the_cli_refuses_a_dominated_snapshot_and_says_why(db: Database, tmp_path: Path) -> None:
    loud, _ = corrections(db, "loud", 3)
    corrections(db, "quiet", 1)
    env = {**os.environ, "DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("DATABASE_URL", None)
    args = ["build-data", "--recipe", "tiny-dpo", "--out", str(tmp_path / "s")]
    done = subprocess.run(
        [sys.executable, "-m", "rl_trainer.cli", *args, "--set", "heldout_fraction=0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"user {loud} holds 75% of the training rows" in done.stderr
    assert not (tmp_path / "s").exists()


def test_corrections_the_sources_do_not_support_are_left_out_and_counted(
    db: Database, tmp_path: Path
) -> None:
    user = add_user(db, "mallory")
    fact = "Water boils at 100 degrees Celsius at sea level."

    def corrected(answer: str) -> str:
        turn = add_turn(db, user, "When does water boil?", "at 50", rating=-1, fact=fact,
                        corrected=answer, correction_in_sources=False)  # fmt: skip
        return turn.id

    honest = corrected("[1] Water boils at 100 degrees Celsius.")
    decline = corrected("The documents do not say.")
    # Another question's answer as the "correction": what a poisoner (or a slip) sends.
    poisoned = corrected("Paris is the capital of France [1].")
    snap = build_data(db, dpo(), tmp_path / "s")
    assert snap.counts["ungrounded_corrections"] == 1
    assert set(snap.turn_ids["train"]) == {honest, decline}
    assert all("Paris" not in row["chosen"][0]["content"] for row in snap.train)
    assert poisoned not in snap.turn_ids["train"]
    # The check can be turned off, and then the poisoned pair is trained on.
    off = build_data(db, dpo(min_correction_support=0.0), tmp_path / "off")
    assert poisoned in off.turn_ids["train"] and "ungrounded_corrections" not in off.counts


def test_a_single_user_deployment_trains_on_all_of_its_data(db: Database, tmp_path: Path) -> None:
    me, turns = corrections(db, "me", 5)
    snap = build_data(db, dpo(), tmp_path / "s")
    assert snap.user_shares == {me: 1.0} and snap.counts["users"] == 1
    assert set(snap.turn_ids["train"]) == set(turns) and len(snap.train) == 5
