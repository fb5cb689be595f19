"""``python -m app.eval``: a user's own set, asked through the agent, scored and reported.

The real CLI runs as a user would run it, against the shared tiny model server and the
real MiniLM embedder; the tiny model's answers are noise, so the test checks what does
not depend on them: the set is read, every question is asked and stored, the unanswerable
one is declined on evidence, and the report has its figures and targets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.eval.dataset import DatasetError, load_dataset
from app.store.answer_checks import citations_valid, ends_in_repetition, recall_f1

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def own_set(folder: Path) -> Path:
    (folder / "documents").mkdir(parents=True)
    (folder / "documents" / "water.txt").write_text(
        "Water boils at 100 degrees Celsius at sea level. Ice melts at 0 degrees Celsius."
    )
    (folder / "documents" / "rust.md").write_text("# Rust\n\nRust is a programming language.")
    rows = [
        {"id": "boil", "question": "When does water boil?", "answers": ["at 100 degrees"]},
        {"id": "cup", "question": "Who won the 1998 football world cup?", "answers": []},
    ]
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_a_users_own_set_is_asked_through_the_agent_and_reported(
    model_server: Any, tmp_path: Path
) -> None:
    data = own_set(tmp_path / "set")
    out = tmp_path / "report.json"
    env = {
        **os.environ,
        "MODEL_SERVER_URL": model_server.url,
        "VLLM_API_KEY": model_server.key,
        "AGENT_MAX_TOKENS": "24",
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-m", "app.eval", "--dataset", str(data), "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| unanswerable_declined | 1.0 | >= 0.5 (met) |" in done.stdout
    assert "questions: 100%" in done.stderr  # the progress bar
    report = json.loads(out.read_text())
    figures = report["figures"]
    assert (figures["questions"], figures["answerable"], figures["unanswerable"]) == (2, 1, 1)
    assert figures["errors"] == 0, [o["error"] for o in report["outcomes"]]
    assert figures["answerable_wrongly_declined"] == 0.0
    outcomes = {o["id"]: o for o in report["outcomes"]}
    assert outcomes["cup"]["declined"] and not outcomes["boil"]["declined"]
    assert outcomes["boil"]["answer"]  # the model was asked and answered


def test_a_folder_that_is_no_set_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    command = [sys.executable, "-m", "app.eval", "--dataset", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "questions.jsonl" in done.stderr
    with pytest.raises(DatasetError):
        load_dataset(tmp_path / "missing")


def test_clapnq_files_are_read_as_they_are(tmp_path: Path) -> None:
    passage = {"title": "Water", "text": "Water boils at 100 degrees."}
    rows = [
        {"id": "1", "input": "when does water boil", "passages": [passage],
         "output": [{"answer": "At 100 degrees."}]},
        {"id": "2", "input": "who drinks water", "passages": [passage], "output": [{"answer": ""}]},
    ]  # fmt: skip
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = load_dataset(tmp_path)
    assert len(data.documents) == 1  # the shared passage once
    assert [(i.answerable, i.references) for i in data.items] == [
        (True, ["At 100 degrees."]),
        (False, []),
    ]
    assert data.items[0].gold_documents == [data.documents[0].document_id]


def test_scores_read_answers_as_a_reader_would() -> None:
    assert recall_f1("It boils at 100 degrees.", ["at 100 degrees"])[0] == 1.0
    assert citations_valid("Yes [1][2].", 2) and not citations_valid("Yes [3].", 2)
    assert not citations_valid("Yes.", 2)
    assert ends_in_repetition("It is the best. " + "the best the best " * 20)
    assert not ends_in_repetition("Water boils at 100 degrees Celsius at sea level.")
