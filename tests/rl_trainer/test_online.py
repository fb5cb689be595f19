"""The online loop end to end: signals through the API start a round by itself, a round
killed with SIGKILL leaves what serves alone and runs again on the next start, and
canary trials are promoted or rolled back from users' thumbs, with sticky arms.

Everything is real: the embedded server with the tiny model, the API over SQLite,
``rl-trainer online`` as its own process. Its own store and adapter line (``online``),
so the other loop tests' versions never mix with these.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.canary import in_canary
from app.store import open_database
from app.store.loop import loop_state, recent_events, start_canary, update_loop
from app.store.models import AdapterStatus, AdapterVersion, Turn, User
from rl_trainer import publish as pub
from tests.app.conftest import (
    ROOT,
    ModelServer,
    auth,
    create_user,
    stop,
    wait_ingested,
)
from tests.conftest import wait_until
from tests.rl_trainer.conftest import Stack, start_loop_api, trainer_env
from tests.rl_trainer.test_loop import DOCUMENT, FACTS

ONLINE_ENV = {
    "ADAPTER_NAME": "online",
    "ONLINE_MIN_SIGNALS": "8",
    "ONLINE_POLL_S": "0.3",
    "ONLINE_LOCK_TTL_S": "30",
    "CANARY_SHARE": "0.5",
    "CANARY_MIN_RATED": "4",
}


@pytest.fixture(scope="module")
def online(
    model_server: ModelServer, tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("online-data")
    api = start_loop_api(data_dir, model_server, ADAPTER_CHECK_S="1")
    env = trainer_env(data_dir, model_server, tiny_chat_model) | ONLINE_ENV
    yield Stack(model_server, api, tiny_chat_model, env)
    stop(api.proc)


@pytest.fixture(scope="module")
def admin(online: Stack) -> str:
    return create_user(online.api, "root", admin=True)


def user_with_document(stack: Stack, client: httpx.Client, name: str) -> str:
    key = create_user(stack.api, name)
    r = client.post(
        f"{stack.api.url}/documents", headers=auth(key), files=[("files", ("f.txt", DOCUMENT))]
    )
    assert r.status_code == 202, r.text
    wait_ingested(client, stack.api.url, key, r.json()["documents"][0]["id"])
    return key


def ask(client: httpx.Client, stack: Stack, key: str, question: str) -> dict[str, Any]:
    r = client.post(
        f"{stack.api.url}/chat", headers=auth(key), json={"message": question, "stream": False}
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def rate(
    client: httpx.Client, stack: Stack, key: str, turn_id: str, rating: int, **extra: Any
) -> None:
    r = client.post(
        f"{stack.api.url}/turns/{turn_id}/feedback",
        headers=auth(key),
        json={"rating": rating, **extra},
    )
    assert r.status_code == 200, r.text


def loop_view(client: httpx.Client, stack: Stack, admin: str) -> dict[str, Any]:
    r = client.get(f"{stack.api.url}/admin/loop", headers=auth(admin))
    assert r.status_code == 200, r.text
    return dict(r.json())


def start_online(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rl_trainer.cli", "online", "--recipe", "tiny-dpo", *args],
        cwd=ROOT,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def served_by(stack: Stack, turn_id: str) -> tuple[str | None, str | None]:
    """``(adapter version, arm)`` the store recorded for a turn."""
    db = open_database(stack.api.db_url())
    with db.session() as s:
        turn = s.get(Turn, turn_id)
        assert turn is not None
        return turn.adapter_version, turn.arm


def versions(stack: Stack) -> dict[str, AdapterStatus]:
    db = open_database(stack.api.db_url())
    with db.session() as s:
        return {v.served_name: v.status for v in s.scalars(select(AdapterVersion))}


def test_admin_controls_of_the_loop(online: Stack, admin: str) -> None:
    with httpx.Client(timeout=60) as client:
        user = create_user(online.api, "not-an-admin")
        assert client.get(f"{online.api.url}/admin/loop", headers=auth(user)).status_code == 403
        url = online.api.url
        r = client.post(f"{url}/admin/loop/pause", headers=auth(admin), json={"reason": "audit"})
        assert r.status_code == 200 and r.json()["state"] == "paused", r.text
        assert r.json()["paused_reason"] == "audit"
        r = client.post(f"{url}/admin/loop/train-now", headers=auth(admin))
        assert r.status_code == 409 and "resume" in r.json()["detail"], r.text
        r = client.post(f"{url}/admin/loop/resume", headers=auth(admin))
        assert r.status_code == 200 and not r.json()["paused"]
        r = client.post(f"{url}/admin/loop/train-now", headers=auth(admin))
        assert r.status_code == 202 and r.json()["train_requested"] is True
        for action in ("promote", "rollback"):
            r = client.post(f"{url}/admin/canary/{action}", headers=auth(admin))
            assert r.status_code == 409 and "no version is on canary" in r.json()["detail"]
        kinds = [e["kind"] for e in loop_view(client, online, admin)["events"]][:3]
        assert kinds == ["train_requested", "resumed", "paused"]
        assert all(
            e["actor"] == "admin:root" for e in loop_view(client, online, admin)["events"][:3]
        )
        # Undo the request, so the slow tests' loop starts on signals, not on this.
        db = open_database(online.api.db_url())
        update_loop(db, train_requested=False)
        assert loop_state(db).train_requested is False
        assert recent_events(db, 1)[0].kind == "train_requested"


@pytest.mark.slow
def test_signals_start_a_round_and_a_killed_round_leaves_serving_alone(
    online: Stack, admin: str
) -> None:
    with httpx.Client(timeout=120) as client:
        key = user_with_document(online, client, "ana")
        for question, fact in FACTS.items():  # 16 corrections: over the trigger of 8
            turn = ask(client, online, key, question)
            rate(client, online, key, turn["turn_id"], -1, corrected_answer=f"[1] {fact}")
        assert loop_view(client, online, admin)["new_signals"] == len(FACTS)

        # Many steps, so the round is still training when it is killed.
        proc = start_online(online, "--set", "max_steps=400")
        try:
            wait_until(
                lambda: loop_view(client, online, admin)["state"] == "training",
                timeout=120,
                what="a round to start by itself",
            )
            wait_until(lambda: (Path(online.env["DATA_DIR"]) / "runs").is_dir(), timeout=60)
            # Only one trainer at a time: a second one is refused, naming the holder.
            second = online.cli("online", "--once", check=False)
            assert second.returncode == 1
            assert "another trainer runs the online loop (" in second.stderr, second.stderr
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        view = loop_view(client, online, admin)
        assert view["state"] == "not running" or not view["alive"] or view["holder"]
        assert view["last_round"]["status"] == "running"  # it never finished
        assert "new signals" in view["last_round"]["message"]
        assert not any(
            s in (AdapterStatus.active, AdapterStatus.canary) for s in versions(online).values()
        )
        assert served_by(online, ask(client, online, key, "Where is Berlin?")["turn_id"])[0] is None

        # The next start takes the dead process's lock at once and runs the round again.
        again = start_online(online, "--max-rounds", "1")
        out, _ = again.communicate(timeout=600)
        assert again.returncode == 0, out
        kinds = [e["kind"] for e in reversed(loop_view(client, online, admin)["events"])]
        assert "round_interrupted" in kinds, kinds
        after = kinds[kinds.index("round_interrupted") :]
        assert "round_started" in after and ("canary_started" in after or "gate_rejected" in after)
        view = loop_view(client, online, admin)
        assert view["last_round"]["status"] == "done", view["last_round"]
        assert view["new_signals"] == 0
        status = online.cli("status").stdout
        assert "online loop: not running" in status and "last round done" in status, status
        if "canary_started" in after:  # an admin stops the trial from the Model page
            assert view["canary"]["share"] == 0.5, view
            r = client.post(f"{online.api.url}/admin/canary/rollback", headers=auth(admin))
            assert r.status_code == 200 and r.json()["canary"] is None, r.text
            assert r.json()["events"][0]["kind"] == "rolled_back"


def arm_users(
    stack: Stack, client: httpx.Client, canary_name: str, prefix: str
) -> dict[str, list[str]]:
    """Two users in each arm of ``canary_name``'s trial (share 0.5), found by their ids."""
    db = open_database(stack.api.db_url())
    arms: dict[str, list[str]] = {"canary": [], "control": []}
    n = 0
    while min(len(v) for v in arms.values()) < 2:
        n += 1
        key = create_user(stack.api, f"{prefix}{n}")
        with db.session() as s:
            user_id = s.scalar(select(User.id).where(User.name == f"{prefix}{n}"))
        assert user_id is not None
        arm = "canary" if in_canary(user_id, canary_name, 0.5) else "control"
        if len(arms[arm]) < 2:
            arms[arm].append(key)
    return arms


def put_on_trial(stack: Stack, fresh_adapter: Path) -> str:
    """Publish an adapter and start its canary trial, as a round does after the gate."""
    done = subprocess.run(
        [sys.executable, "-m", "rl_trainer.cli", "publish", str(fresh_adapter)],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    name = done.stdout.strip().splitlines()[-1]
    db = open_database(stack.api.db_url())
    start_canary(db, pub.get_version(db, "online", name).id, 0.5)
    return name


def trial(
    stack: Stack, client: httpx.Client, admin: str, fresh_adapter: Path, *, canary_rating: int
) -> tuple[str, dict[str, list[str]], list[dict[str, Any]]]:
    """A canary trial where canary users rate ``canary_rating`` and control users the other."""
    name = put_on_trial(stack, fresh_adapter)
    arms = arm_users(stack, client, name, prefix=f"t{canary_rating}-{name}-")
    answers = []
    for arm, keys in arms.items():
        rating = canary_rating if arm == "canary" else -canary_rating
        for key in keys:
            for question in ("Where is Berlin?", "What is Rust?"):
                answer = ask(client, stack, key, question)
                answers.append({"arm": arm, "key": key, **answer})
                rate(client, stack, key, answer["turn_id"], rating)
    metrics = client.get(f"{stack.api.url}/metrics", headers=auth(admin)).text
    assert "flywheel_canary_share 0.5" in metrics
    assert 'flywheel_canary_down_rate{arm="canary"}' in metrics
    once = subprocess.run(
        [sys.executable, "-m", "rl_trainer.cli", "online", "--once"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert once.returncode == 0, once.stdout + once.stderr
    return name, arms, answers


@pytest.mark.slow
def test_canary_rated_worse_is_rolled_back_and_a_better_one_promoted(
    online: Stack, admin: str, fresh_adapter: Path
) -> None:
    with httpx.Client(timeout=120) as client:
        name, arms, answers = trial(online, client, admin, fresh_adapter, canary_rating=-1)
        # Sticky: each user's turns were answered in its arm, by the canary exactly there.
        for a in answers:
            expected = name if a["arm"] == "canary" else None
            assert served_by(online, a["turn_id"]) == (expected, a["arm"]), a

        assert versions(online)[name] == AdapterStatus.rejected
        event = next(
            e for e in loop_view(client, online, admin)["events"] if e["kind"] == "rolled_back"
        )
        assert event["version"] == name and "Fisher" in event["message"], event
        assert event["figures"]["figures"]["canary"]["down"] == 4
        metrics = client.get(f"{online.api.url}/metrics", headers=auth(admin)).text
        assert 'flywheel_online_events_total{kind="rolled_back"}' in metrics
        assert "flywheel_canary_share 0.0" in metrics
        # Everyone is back on what was serving before.
        back = ask(client, online, arms["canary"][0], "Where is Berlin?")
        assert served_by(online, back["turn_id"]) == (None, None)

        better, arms, _ = trial(online, client, admin, fresh_adapter, canary_rating=1)
        assert versions(online)[better] == AdapterStatus.active
        event = next(
            e for e in loop_view(client, online, admin)["events"] if e["kind"] == "promoted"
        )
        assert event["version"] == better and "not worse than control" in event["message"]
        for keys in arms.values():
            assert (
                served_by(online, ask(client, online, keys[0], "What is Rust?")["turn_id"])[0]
                == better
            )
