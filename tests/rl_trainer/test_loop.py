"""The loop end to end: turns logged through the real API, ``rl-trainer run``, and the
answers users get through ``/chat`` before, after, and after a rollback.

The tiny model cannot judge, so the rule "answers open with a citation marker" stands in
for the judge; users' corrected answers carry that signal. Answers are greedy so a
change is the adapter's doing, not sampling noise.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.store import open_database
from app.store.models import AdapterVersion, Turn
from rl_trainer.rewards import leading_citation
from tests.app.conftest import auth, create_user, wait_ingested
from tests.app.sse import chat_stream
from tests.conftest import wait_until
from tests.rl_trainer.conftest import Stack

FACTS = {
    "When does water boil?": "Water boils at 100 degrees Celsius at sea level.",
    "When does ice melt?": "Ice melts at 0 degrees Celsius.",
    "What is the capital of France?": "The capital of France is Paris.",
    "Where is Berlin?": "Berlin is the capital of Germany.",
    "What is Rust?": "Rust is a programming language.",
    "What did the study find?": "The study found that the treatment reduced the risk of disease.",
    "What do cells contain?": "Cells contain protein and genes.",
    "What does the fox do?": "The quick brown fox jumps over the lazy dog.",
    "What is retrieval augmented generation?": "It combines a search with a language model.",
    "Which year was a leap year?": "2024 was a leap year.",
    "Who wrote the project?": "The project was written by the user in Rust.",
    "Where does the user live?": "The user lives in Berlin.",
    "What does the user eat?": "The user is vegetarian.",
    "What are the results?": "The results were reported in the methods and conclusions.",
    "How many sources are there?": "There are five sources.",
    "What is the title page?": "The title page names the document.",
}
HELD_OUT = [
    "What temperature is boiling water?",
    "Is Paris in France?",
    "What language is the project in?",
    "What did the treatment do?",
    "What is in a cell?",
    "Is 2024 special?",
]
DOCUMENT = "\n".join(FACTS.values()).encode()


def ask(client: httpx.Client, stack: Stack, key: str, question: str) -> dict[str, Any]:
    r = client.post(
        f"{stack.api.url}/chat", headers=auth(key), json={"message": question, "stream": False}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["error"] is None and body["sources"], body
    return body


def score(answers: list[dict[str, Any]]) -> float:
    """Mean of the reward the loop trains for, on answers users got."""
    values = leading_citation([a["answer"] for a in answers], num_sources=[1] * len(answers))
    return sum(v or 0.0 for v in values) / len(values)


def adapters_of(stack: Stack, answers: list[dict[str, Any]]) -> set[str | None]:
    db = open_database(stack.api.db_url())
    with db.session() as session:
        ids = [a["turn_id"] for a in answers]
        return set(session.scalars(select(Turn.adapter_version).where(Turn.id.in_(ids))))


@pytest.fixture(scope="module")
def user(stack: Stack) -> str:
    key = create_user(stack.api, "ana")
    with httpx.Client(timeout=120) as client:
        r = client.post(
            f"{stack.api.url}/documents",
            headers=auth(key),
            files=[("files", ("facts.txt", DOCUMENT))],
        )
        assert r.status_code == 202, r.text
        doc_id = r.json()["documents"][0]["id"]
        wait_ingested(client, stack.api.url, key, doc_id)
    return key


@pytest.mark.slow
def test_the_loop_changes_what_users_get_and_rollback_undoes_it(stack: Stack, user: str) -> None:
    with httpx.Client(timeout=120) as client:
        before = [ask(client, stack, user, q) for q in HELD_OUT]
        # Users correct answers: a corrected answer opens with the source it comes from.
        for question, fact in FACTS.items():
            turn = ask(client, stack, user, question)
            r = client.post(
                f"{stack.api.url}/turns/{turn['turn_id']}/feedback",
                headers=auth(user),
                json={"rating": -1, "corrected_answer": f"[1] {fact}"},
            )
            assert r.status_code == 200, r.text

        done = stack.cli("run", "--recipe", "tiny-dpo")
        assert "promoted: yes; serving now: flywheel-v1" in done.stdout, done.stdout
        # Every pair is counted: trained on, or dropped with its reason.
        assert "rows: trained on " in done.stdout and "(max_length 1024" in done.stdout

        after = [ask(client, stack, user, q) for q in HELD_OUT]
        assert score(before) <= 0.2, [a["answer"] for a in before]
        assert score(after) >= 0.8, [a["answer"] for a in after]
        assert adapters_of(stack, before) == {None}
        assert adapters_of(stack, after) == {"flywheel-v1"}

        # Traceable, and the prompts we measure on were never trained on.
        status = json.loads(stack.cli("status", "--json").stdout)
        assert status["active"] == "flywheel-v1" and "flywheel-v1" in status["server_loaded"]
        db = open_database(stack.api.db_url())
        with db.session() as session:
            row = session.scalar(select(AdapterVersion).where(AdapterVersion.version == 1))
            assert row is not None
            manifest = row.manifest
        rows = manifest["training_rows"]
        assert rows["kept"] == rows["given"] == manifest["data"]["counts"]["train"]
        assert status["versions"][0]["training_rows"]["kept"] == rows["kept"]
        assert f"trained={rows['kept']}/{rows['given']}" in stack.cli("status").stdout
        assert "judge (separate from the policy): replies parsed 1.00" in done.stdout
        trained = set(manifest["data"]["turn_ids"]["train"])
        assert len(trained) >= 8 and not trained & {a["turn_id"] for a in before + after}
        assert manifest["gate"]["passed"] and manifest["gate"]["win_rate"] >= 0.55
        assert manifest["recipe"]["algo"] == "dpo" and manifest["metrics"]["train_loss"] > 0

        back = stack.cli("rollback")
        assert "serving the base model" in back.stdout
        again = [ask(client, stack, user, q) for q in HELD_OUT]
        assert [a["answer"] for a in again] == [a["answer"] for a in before]
        assert adapters_of(stack, again) == {None}


@pytest.mark.slow
def test_a_candidate_that_loses_the_gate_is_not_promoted(stack: Stack, user: str) -> None:
    # Learning rate 0: the candidate answers exactly like the base model, so it cannot win.
    done = stack.cli(
        "run",
        "--recipe",
        "tiny-dpo",
        "--set",
        "learning_rate=0",
        "--set",
        "max_steps=2",
        "--set",
        "init=fresh",
        "--skip-judge",
    )
    assert "promoted: no; serving now:" in done.stdout and "win rate 0.50" in done.stdout
    status = json.loads(stack.cli("status", "--json").stdout)
    assert status["active"] is None
    v2 = next(v for v in status["versions"] if v["served_name"] == "flywheel-v2")
    assert v2["status"] == "rejected" and not v2["loaded"]
    # What the gate rejected serves only when forced.
    refused = stack.cli("promote", "2", check=False)
    assert refused.returncode == 1 and "--force" in refused.stderr, refused.stderr
    assert json.loads(stack.cli("status", "--json").stdout)["active"] is None
    assert "serving flywheel-v2" in stack.cli("promote", "2", "--force").stdout
    assert "serving the base model" in stack.cli("rollback").stdout
    with httpx.Client(timeout=120) as client:
        assert adapters_of(stack, [ask(client, stack, user, HELD_OUT[0])]) == {None}


@pytest.mark.slow
def test_promote_while_chats_stream_fails_no_request(stack: Stack, user: str) -> None:
    results: list[list[tuple[str, Any]]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def chat_forever(question: str) -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                try:
                    results.append(chat_stream(client, stack.api.url, user, question))
                except BaseException as exc:
                    failures.append(exc)
                    return

    threads = [threading.Thread(target=chat_forever, args=(q,)) for q in HELD_OUT[:3]]
    for t in threads:
        t.start()

    def served_by(adapter: str | None) -> bool:
        return any(
            dict(events).get("done", {}).get("adapter_version", "?") == adapter
            for events in list(results)
        )

    # Promote once the base model has answered, then wait for the new adapter to answer.
    wait_until(lambda: served_by(None) or failures, 300, what="a turn on the base model")
    promoted = stack.cli("promote", "1")
    assert "serving flywheel-v1" in promoted.stdout
    wait_until(lambda: served_by("flywheel-v1") or failures, 300, what="a turn on flywheel-v1")
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    kinds = [[kind for kind, _ in events] for events in results]
    assert all("done" in k and "error" not in k for k in kinds), kinds
    served = [dict(events)["done"]["adapter_version"] for events in results]
    # Traffic moved from the base model to the new adapter while requests kept coming.
    assert served[0] is None and served[-1] == "flywheel-v1", served


@pytest.mark.slow
def test_grpo_runs_from_the_cli_on_the_same_store(stack: Stack, user: str) -> None:
    # Starts from the active adapter (v1, promoted above) and is gated against it.
    done = stack.cli("run", "--recipe", "tiny-grpo", "--set", "max_steps=2", "--skip-judge")
    assert "gate: flywheel-v3 vs flywheel-v1" in done.stdout, done.stdout
    run_dir = Path(done.stdout.split("run: ", 1)[1].splitlines()[0])
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("rewards/leading_citation/mean", "rewards/citation_validity/std", "kl", "entropy"):
        assert key in logged[0], sorted(logged[0])
    status = json.loads(stack.cli("status", "--json").stdout)
    v3 = next(v for v in status["versions"] if v["served_name"] == "flywheel-v3")
    assert v3["algo"] == "grpo" and v3["status"] in ("active", "rejected")
    assert status["active"] == ("flywheel-v3" if v3["status"] == "active" else "flywheel-v1")
