"""``bench/flywheel.py`` runs a round end to end on the tiny model: questions through the
API, ratings by the simulated users' rule, ``rl-trainer run``, and ``app.eval`` on the
evaluation pool, which the round never asks."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.eval.dataset import pool_of
from tests.app.conftest import ROOT

FACTS = [
    ("Water", "Water boils at 100 degrees Celsius at sea level.", "when does water boil"),
    ("Ice", "Ice melts at 0 degrees Celsius.", "when does ice melt"),
    ("France", "The capital of France is Paris.", "what is the capital of france"),
    ("Berlin", "Berlin is the capital of Germany.", "what is the capital of germany"),
    ("Rust", "Rust is a programming language.", "what is rust"),
    ("Cells", "Cells contain protein and genes.", "what do cells contain"),
]


def clapnq_set(folder: Path) -> dict[str, list[str]]:
    """A small set in ClapNQ's format; the questions of each pool."""
    rows: list[dict[str, object]] = []
    pools: dict[str, list[str]] = {"train": [], "eval": []}
    for n, (title, text, question) in enumerate(FACTS * 2):
        for answerable in (True, False):
            qid = f"{n}-{answerable}"
            asked = question if answerable else f"who painted the {title.lower()} mural"
            if n >= len(FACTS):
                asked += " today"
            answer = text if answerable else ""
            passage = {"title": title, "text": text}
            rows.append(
                {"id": qid, "input": asked, "passages": [passage], "output": [{"answer": answer}]}
            )
            pools[pool_of(qid)].append(asked)
    folder.mkdir(parents=True)
    (folder / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return pools


@pytest.mark.slow
def test_one_round_on_the_tiny_model_through_the_api(tiny_chat_model: Path, tmp_path: Path) -> None:
    pools = clapnq_set(tmp_path / "set")
    work, out = tmp_path / "work", tmp_path / "table.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/flywheel.py",
            "--dataset",
            str(tmp_path / "set"),
            "--model",
            str(tiny_chat_model),
            "--recipe",
            "tiny-dpo",
            "--rounds",
            "1",
            "--questions",
            "8",
            "--work",
            str(work),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "round poisoned" in done.stdout  # the table a person reads
    table = json.loads(out.read_text())
    (round_one,) = table["rounds"]
    assert round_one["signals"]["asked"] == 8 and round_one["signals"]["errors"] == 0
    assert round_one["signals"]["up"] + round_one["signals"]["down"] == 8
    assert round_one["trainer"]["exit"] in (0, 1)  # trained, or said why it could not
    assert round_one["eval"]["questions"] == len(pools["eval"])
    assert table["base"]["questions"] == len(pools["eval"])
    # What users asked and rated went through the API into the store; the evaluation
    # pool was never asked there.
    db = sqlite3.connect(work / "store" / "flywheel.db")
    asked = {q for (q,) in db.execute("SELECT question FROM turns")}
    rated = db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
    assert asked and asked <= set(pools["train"]) and not asked & set(pools["eval"])
    assert rated == 8
    # Every simulated user has the documents: retrieval searches only a user's own.
    owners = db.execute("SELECT COUNT(DISTINCT user_id) FROM documents").fetchone()[0]
    assert owners == db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 4


def test_the_bench_plans_enough_users_that_the_trainer_counts_every_rating() -> None:
    """The trainer counts 20 ratings per user a day; 4 rounds of 32 need 7 users, or the
    last rounds (the poisoned one included) would train on nothing new."""
    sys.path.insert(0, str(ROOT / "bench"))
    from flywheel import needed_users

    assert needed_users("smollm2-dpo", [], 4 * 32) == 7
    assert needed_users("smollm2-dpo", ["max_ratings_per_user_per_day=64"], 4 * 32) == 4
    assert needed_users("tiny-dpo", [], 8) == 4  # never fewer than 4 (the share check)
