"""One flywheel round on the real SmolLM2-135M-Instruct: questions and corrections through
the API, ``rl-trainer run`` trains, gates and publishes, and the adapter's manifest names
exactly the turns the store holds for it, no more and no fewer.

Slow (a real model on CPU), with few questions, one DPO step and short answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.store import open_database
from app.store.models import AdapterVersion, Feedback, Turn
from tests.app.conftest import (
    auth,
    create_user,
    start_api,
    start_model_server,
    stop,
    wait_ingested,
)
from tests.rl_trainer.conftest import Stack, trainer_env
from tests.rl_trainer.test_loop import DOCUMENT, FACTS, ask

pytestmark = pytest.mark.slow

QUESTIONS = list(FACTS.items())[:8]


def test_one_round_on_smollm2_trains_on_exactly_the_stored_turns(
    smollm2_model: Path, tmp_path: Path
) -> None:
    server = start_model_server(smollm2_model, tmp_path / "adapters", MODEL_SERVER_THREADS="1")
    api = start_api(
        tmp_path / "data",
        server.url,
        AGENT_MAX_TOKENS="24",
        AGENT_TOP_K="2",
        AGENT_MIN_EVIDENCE="0",
        MEMORY_ENABLED="false",
    )
    stack = Stack(server, api, smollm2_model, trainer_env(tmp_path / "data", server, smollm2_model))
    try:
        key = create_user(api, "ana")
        with httpx.Client(timeout=300) as client:
            r = client.post(
                f"{api.url}/documents", headers=auth(key), files=[("files", ("f.txt", DOCUMENT))]
            )
            assert r.status_code == 202, r.text
            wait_ingested(client, api.url, key, r.json()["documents"][0]["id"])
            rated = []
            for question, fact in QUESTIONS:
                turn = ask(client, stack, key, question)
                r = client.post(
                    f"{api.url}/turns/{turn['turn_id']}/feedback",
                    headers=auth(key),
                    json={"rating": -1, "corrected_answer": f"{fact} [1]"},
                )
                assert r.status_code == 200, r.text
                rated.append(turn["turn_id"])
        done = stack.cli(
            "run",
            "--recipe",
            "smollm2-dpo",
            "--skip-judge",
            "--set",
            "max_steps=1",
            "--set",
            "max_length=640",
            "--set",
            "gate_limit=2",
            "--set",
            "gate_max_tokens=24",
            check=False,
        )
        assert "run: " in done.stdout, done.stdout + done.stderr[-3000:]
        run_dir = Path(done.stdout.split("run: ", 1)[1].splitlines()[0])
        report = json.loads((run_dir / "report.json").read_text())
        assert report["candidate"] == "flywheel-v1", report
        rows = [json.loads(line) for line in (run_dir / "data" / "train.jsonl").open()]
        trained = {t for row in rows for t in row.get("turn_ids", [row.get("turn_id")])}
        fit = json.loads((run_dir / "fit.json").read_text())
        assert fit["kept"] == fit["given"] == len(rows) > 0, fit  # nothing dropped silently

        db = open_database(api.db_url())
        with db.session() as s:
            version = s.scalar(select(AdapterVersion).where(AdapterVersion.version == 1))
            assert version is not None
            ids = version.manifest["data"]["turn_ids"]
            stored = set(s.scalars(select(Feedback.turn_id).where(Feedback.rating < 0)))
            owners = set(s.scalars(select(Turn.user_id).where(Turn.id.in_(ids["train"]))))
        # The manifest names the rows' turns; they and the held-out ones are the rated turns.
        assert set(ids["train"]) == trained
        assert not set(ids["train"]) & set(ids["heldout"])
        assert set(ids["train"]) | set(ids["heldout"]) == stored == set(rated)
        assert len(owners) == 1
        assert report["gate"] is not None and "passed" in report["gate"]
        # The recipe skips SmolLM2 judging its own answers: the gate asked for answers only.
        assert report["gate"]["judge_compared"] is False and report["gate"]["win_rate"] is None
    finally:
        stop(api.proc)
        stop(server.proc)
