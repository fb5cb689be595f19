"""The Model page's online loop and adapter versions, by AppTest against the real API.

The loop's controls each ask first, then call the admin routes; what the API answers
(a 409 included) is what the page shows. Adapter versions are written straight into the
API's store, as the trainer records them, and removed again so other tests see none.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.app.conftest import Api, auth
from tests.ui.conftest import add_adapter_version, loop_now, remove_adapter_versions, signed_in

pytestmark = pytest.mark.slow


def click(at: Any, label: str) -> None:
    """Click the button labelled ``label`` and run the page."""
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception


def labels(at: Any) -> list[str]:
    return [b.label for b in at.button]


def test_model_page_loop_controls_ask_first_and_show_the_api_answer(
    ui_env: Api, keys: dict[str, str]
) -> None:
    admin = keys["admin"]
    assert loop_now(ui_env, admin)["paused"] is False
    at = signed_in(admin, "views/model.py")
    assert not at.error, [e.value for e in at.error]
    assert "Online loop" in [s.value for s in at.subheader]
    assert {m.label: m.value for m in at.metric}["Loop state"] == "not running"
    assert "Promote" not in labels(at) and "Roll back" not in labels(at), "no canary, no buttons"
    assert any("No version is on canary trial now" in c.value for c in at.caption)

    # Pause asks first; Cancel changes nothing.
    click(at, "Pause")
    assert "Yes, pause" in labels(at)
    click(at, "Cancel")
    assert "Yes, pause" not in labels(at)
    assert loop_now(ui_env, admin)["paused"] is False

    click(at, "Pause")
    at.text_input(key="pause-reason").input("checking the length monitor")
    click(at, "Yes, pause")
    loop = loop_now(ui_env, admin)
    assert (loop["paused"], loop["paused_reason"]) == (True, "checking the length monitor")
    assert [s.value for s in at.success] == ["The loop is paused. Loop state now: paused."]
    assert [w.value for w in at.warning if "Paused" in w.value] == [
        "Paused: checking the length monitor"
    ]
    assert {m.label: m.value for m in at.metric}["Loop state"] == "paused"

    # Train now while paused: the API refuses (409) and the page says why.
    click(at, "Train now")
    click(at, "Yes, train now")
    assert [e.value for e in at.error] == [
        "Not possible right now. (the loop is paused: resume it before asking for a round)"
    ]
    assert loop_now(ui_env, admin)["train_requested"] is False

    click(at, "Resume")
    click(at, "Yes, resume")
    loop = loop_now(ui_env, admin)
    assert (loop["paused"], loop["paused_reason"]) == (False, None)
    assert [s.value for s in at.success] == ["The loop runs again. Loop state now: not running."]
    assert "Pause" in labels(at) and "Resume" not in labels(at)

    # Now the API takes the request (the loop, when one runs, starts the round).
    click(at, "Train now")
    click(at, "Yes, train now")
    assert loop_now(ui_env, admin)["train_requested"] is True
    assert [s.value for s in at.success] == [
        "A round was asked for: the loop starts it on its next check. Loop state now: not running."
    ]
    assert any("waits for the loop's next check" in i.value for i in at.info)

    # Every decision is in the log, newest first, with who made it.
    log = next(d.value for d in at.dataframe if "kind" in d.value.columns)
    assert list(log["kind"][:3]) == ["train_requested", "resumed", "paused"]
    assert set(log["by"][:3]) == {"admin:ui-admin"}


EVAL = {
    "answerable_recall": 0.43,
    "unanswerable_declined": 0.6,
    "answerable_wrongly_declined": 0.1,
    "answers_citing_valid_source": 0.95,
    "answers_ending_in_repetition": 0.0,
    "latency_p50_s": 1.5,
}
BASE_EVAL = {**EVAL, "answerable_recall": 0.25, "unanswerable_declined": 0.3}


def trained_on(turns: list[str]) -> dict[str, Any]:
    """A manifest's ``data``: counts per signal and the turns trained on."""
    counts = {"turns_seen": 9, "with_signal": len(turns) + 1, "train": len(turns), "heldout": 1}
    return {"algo": "dpo", "counts": counts, "turn_ids": {"train": turns, "heldout": ["t-held"]}}


def test_model_page_versions_their_eval_and_a_canary_rolled_back(
    ui_env: Api, keys: dict[str, str]
) -> None:
    admin, name = keys["admin"], "ui-flywheel"
    rejected = add_adapter_version(
        ui_env,
        name,
        1,
        {
            "algo": "dpo",
            "gate": {"passed": False, "win_rate": 0.3, "reasons": ["win rate 0.30 below 0.50"]},
            "data": trained_on(["t-1"]),
        },
    )
    evaluated = add_adapter_version(
        ui_env,
        name,
        2,
        {
            "algo": "dpo",
            "gate": {"passed": True, "win_rate": 0.7, "reasons": []},
            "data": trained_on(["t-2", "t-3"]),
            "training_rows": {"given": 3, "kept": 2, "shortened": 1, "dropped": {"too long": 1}},
            "metrics": {"train_loss": 0.61},
            "eval": {"dataset": "clapnq-dev", "pool": "eval", "figures": EVAL, "base": BASE_EVAL},
        },
    )
    history = [
        {"at": f"2025-01-01T10:0{i}:00", "canary_turns": 4 * i, "control_turns": 9 * i}
        | {"canary_mean_length": 40.0 + 30 * i, "control_mean_length": 41.0}
        | {"canary_down_rate": 0.2, "control_down_rate": 0.25}
        for i in (1, 2)
    ]
    check = {"action": "wait", "reason": "undecided so far", "figures": {}, "tripped": []}
    canary = add_adapter_version(
        ui_env,
        name,
        3,
        {"algo": "dpo", "canary": {"history": history, "last_check": check}},
        canary_share=0.25,
    )
    try:
        at = signed_in(admin, "views/model.py")
        gate_failed = "Gate failed (win rate 0.30).\n\n- win rate 0.30 below 0.50"
        assert [e.value for e in at.error] == [gate_failed], "the only red: v1's gate"

        table = next(d.value for d in at.dataframe if "gate reasons" in d.value.columns)
        by_version = table.set_index("version")
        assert by_version.loc[rejected, "gate"] == "failed"
        assert by_version.loc[rejected, "gate reasons"] == "win rate 0.30 below 0.50"
        assert by_version.loc[evaluated, "answerable token recall"] == 0.43
        assert by_version.loc[evaluated, "rows kept"] == "2/3"
        assert by_version.loc[evaluated, "train"] == 2

        specs = [c.proto.spec for c in at.get("vega_lite_chart")]
        evals = [s for s in specs if "answerable token recall" in s]
        assert len(evals) == 1 and "base model (same run)" in evals[0]
        assert "median latency (s)" in evals[0]
        assert any(f"Without eval figures: {rejected}, {canary}." in c.value for c in at.caption)

        details = next(e for e in at.expander if e.label.startswith(evaluated))
        assert details.label == f"{evaluated} · candidate · gate passed"
        turns = next(d.value for d in details.dataframe if "turn id" in d.value.columns)
        assert list(turns["turn id"]) == ["t-2", "t-3", "t-held"]
        metrics = next(d.value for d in details.dataframe if "metric" in d.value.columns)
        assert metrics.values.tolist() == [["train_loss", "0.61"]]
        gate = next(e for e in at.expander if e.label.startswith(rejected))
        assert [e.value for e in gate.error] == [gate_failed]

        # The canary: share, both arms, the monitors' charts, the last check.
        assert any(f"`{canary}` serves 25% of users" in m.value for m in at.markdown)
        arms = next(d.value for d in at.dataframe if "canary" in d.value.columns)
        assert list(arms.columns) == ["figure", "canary", "control"]
        monitors = [s for s in specs if "mean answer length" in s]
        assert len(monitors) == 1 and "thumbs-down rate" in monitors[0]
        assert any("Last check: **wait**: undecided so far" in i.value for i in at.info)

        # Promote asks first (Cancel keeps the trial); Roll back, confirmed, stops it.
        click(at, "Promote")
        click(at, "Cancel")
        assert loop_now(ui_env, admin)["canary"]["version"] == canary
        click(at, "Roll back")
        click(at, "Yes, roll back")
        loop = loop_now(ui_env, admin)
        assert loop["canary"] is None
        assert (loop["events"][0]["kind"], loop["events"][0]["version"]) == ("rolled_back", canary)
        outcome = at.success[0].value  # the loop's section comes before the versions'
        assert outcome == "The canary was stopped and rejected. Loop state now: not running."
        assert "Roll back" not in labels(at)
        stored = httpx.get(f"{ui_env.url}/admin/adapters", headers=auth(admin)).json()
        assert next(a["status"] for a in stored if a["served_name"] == canary) == "rejected"
    finally:
        if loop_now(ui_env, admin)["canary"] is not None:  # never leave a canary serving
            httpx.post(f"{ui_env.url}/admin/canary/rollback", headers=auth(admin))
        remove_adapter_versions(ui_env, name)
