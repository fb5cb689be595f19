"""The shared adapter learns only what each user may share (real SQLite store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.agent import prompts
from app.store import open_database
from app.store.db import Database, make_engine
from rl_trainer.config import Recipe
from rl_trainer.data import build_data
from tests.rl_trainer.store import add_turn, add_user

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the vault code?"
SECRETS = {"alice": "ALPHA-7731", "bob": "BRAVO-2208"}


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'flywheel.db'}")


def two_users(db: Database) -> tuple[dict[str, str], dict[str, str]]:
    """Alice and Bob ask the same question about their own private documents.

    Each rates a good and a bad answer; Alice's bad answer quotes her secret, so a pair
    across users would put it in a row under Bob's prompt. Returns the user ids by name
    and the owner's name of each turn.
    """
    users = {name: add_user(db, name) for name in SECRETS}
    owner: dict[str, str] = {}
    for name, user in users.items():
        fact = f"{name.title()}'s vault code is {SECRETS[name]}."
        good = f"[1] The code is {SECRETS[name]}." if name == "bob" else "[1] It is in the memo."
        bad = f"Maybe {SECRETS[name]}?" if name == "alice" else "No idea."
        for answer, rating in ((good, 1), (bad, -1)):
            owner[add_turn(db, user, QUESTION, answer, fact=fact, rating=rating).id] = name
    return users, owner


def owner_of(row: dict[str, Any], owner: dict[str, str]) -> str:
    names = {owner[t] for t in row.get("turn_ids", [row.get("turn_id")])}
    assert len(names) == 1, f"a row mixes users' turns: {names}"
    return names.pop()


def prompt_text(row: dict[str, Any]) -> str:
    return json.dumps(row["prompt"])


@pytest.mark.parametrize("algo", ["dpo", "grpo"])
def test_rows_hold_only_their_owners_turns_and_no_sources_by_default(
    db: Database, tmp_path: Path, algo: str
) -> None:
    _, owner = two_users(db)
    recipe = Recipe(algo=algo, heldout_fraction=0.0, judge="rule:leading_citation")  # type: ignore[arg-type]
    snap = build_data(db, recipe, tmp_path / "s")
    assert {owner_of(r, owner) for r in snap.train} == {"alice", "bob"}
    for row in snap.train:
        name = owner_of(row, owner)
        other = next(n for n in SECRETS if n != name)
        assert SECRETS[other] not in json.dumps(row)  # nowhere: prompt, chosen, rejected
        assert not any(secret in prompt_text(row) for secret in SECRETS.values())
        # The question and the instruction stay; only the private sources are left out.
        assert row["prompt"][0] == {"role": "system", "content": prompts.ANSWER_SYSTEM}
        assert row["prompt"][-1] == {"role": "user", "content": QUESTION}
    if algo == "dpo":
        chosen = {owner_of(r, owner): r["chosen"][0]["content"] for r in snap.train}
        assert chosen == {"alice": "[1] It is in the memo.", "bob": "[1] The code is BRAVO-2208."}
    # What was written for the trainer holds no source either.
    assert "vault code is" not in (tmp_path / "s" / "train.jsonl").read_text()


def test_an_opted_in_users_prompts_keep_their_sources_and_no_one_elses(
    db: Database, tmp_path: Path
) -> None:
    _, owner = two_users(db)
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    opt_in = [sys.executable, "-m", "app.users", "train-on-context", "bob", "on"]
    done = subprocess.run(opt_in, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "training prompts now keep the sources and memories of 'bob'" in done.stderr
    recipe = Recipe(algo="grpo", heldout_fraction=0.0, rewards={"citation_validity": 1.0})
    snap = build_data(db, recipe, tmp_path / "s")
    for row in snap.train:
        if owner_of(row, owner) == "bob":
            assert "Bob's vault code is BRAVO-2208." in prompt_text(row)
            assert SECRETS["alice"] not in json.dumps(row)
        else:
            assert not any(secret in prompt_text(row) for secret in SECRETS.values())
            assert SECRETS["bob"] not in json.dumps(row)


def test_users_stored_before_the_opt_in_existed_have_not_opted_in(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from app.store.db import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "INSERT INTO users (id, name, api_key_hash, role, trusted, created_at) "
                "VALUES ('u1', 'old', 'h', 'user', 1, '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    db = open_database(url)  # migrates to the newest schema
    with db.session() as session:
        assert session.execute(text("SELECT train_on_context FROM users")).scalar_one() == 0
    db.close()
