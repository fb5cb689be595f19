"""The online loop on the Model page: its state, the canary against control, the controls.

Every button only asks: it opens a confirmation, and only "Yes" calls the API, whose
admin routes do what ``rl-trainer online`` would (train now is a request the loop picks
up; promote and roll back act on a version that already passed the gate). The page
never goes around the trainer's checks, and shows the API's answer, 409s included.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ui.adapter_versions import stamp
from ui.api_client import ApiClient, ApiError, Json

# The action whose confirmation is open, and the last action's outcome, across reruns.
PENDING = "loop_action_pending"
OUTCOME = "loop_action_outcome"
REASON = "pause-reason"

# Monitor figures of ``canary.history`` (``canary_<name>`` and ``control_<name>``).
MONITORS = {
    "down_rate": "thumbs-down rate",
    "error_rate": "error rate",
    "mean_length": "mean answer length",
    "distinct_2": "distinct-2 diversity",
    "declining_share": "share of answers declining",
    "citation_validity": "citation validity",
    "judge_thumbs_agreement": "judge and thumbs agreement",
}
ARMS = ("canary", "control")


@dataclass(frozen=True)
class Action:
    """A button of the loop, what its confirmation says, and the call it makes."""

    button: str
    icon: str
    title: str
    text: str
    confirm: str
    call: Callable[[ApiClient], Json]
    done: str


def pause(api: ApiClient) -> Json:
    """Pause with the reason typed in the confirmation."""
    return api.pause_loop(str(st.session_state.get(REASON) or "").strip() or "paused by an admin")


ACTIONS = {
    "pause": Action(
        "Pause",
        ":material/pause:",
        "Pause the online loop?",
        "No new round starts until an admin resumes it. A round already training "
        "finishes, and a canary keeps serving.",
        "Yes, pause",
        pause,
        "The loop is paused.",
    ),
    "resume": Action(
        "Resume",
        ":material/play_arrow:",
        "Resume the online loop?",
        "Rounds start again once enough new signals arrive, or on schedule.",
        "Yes, resume",
        ApiClient.resume_loop,
        "The loop runs again.",
    ),
    "train": Action(
        "Train now",
        ":material/model_training:",
        "Ask for a round now?",
        "The running loop starts a round on its next check: it snapshots the data, trains, "
        "and the gate decides as for any round.",
        "Yes, train now",
        ApiClient.train_now,
        "A round was asked for: the loop starts it on its next check.",
    ),
    "promote": Action(
        "Promote",
        ":material/rocket_launch:",
        "Promote {version}?",
        "It serves every user from now on, and the version serving now is retired. It "
        "passed the gate already; this ends its trial early.",
        "Yes, promote",
        ApiClient.promote_canary,
        "The canary was promoted: it serves everyone now.",
    ),
    "rollback": Action(
        "Roll back",
        ":material/undo:",
        "Stop {version} and roll back?",
        "Every user goes back to the version serving now, and the canary is marked rejected.",
        "Yes, roll back",
        ApiClient.rollback_canary,
        "The canary was stopped and rejected.",
    ),
}


def ask(name: str) -> None:
    """Open the confirmation of ``name``."""
    st.session_state[PENDING] = name


def close_confirmation() -> None:
    """Stop asking (the confirmation was dismissed or answered)."""
    st.session_state.pop(PENDING, None)


def confirmation(api: ApiClient, name: str, version: str) -> None:
    """The open confirmation: Cancel, or Yes (which calls the API and keeps its answer).

    ``version`` is the canary's served name, for the promote and roll back titles.
    """
    action = ACTIONS[name]

    def body() -> None:
        st.write(action.text)
        if name == "pause":
            st.text_input("Reason (other admins see it)", "paused by an admin", key=REASON)
        yes, no = st.columns(2)
        if no.button("Cancel", key=f"cancel-{name}", width="stretch"):
            close_confirmation()
            st.rerun()
        if yes.button(action.confirm, key=f"confirm-{name}", type="primary", width="stretch"):
            close_confirmation()
            try:
                loop = action.call(api)
            except ApiError as exc:
                st.session_state[OUTCOME] = ("error", exc.message)
            else:
                st.session_state[OUTCOME] = (
                    "success",
                    f"{action.done} Loop state now: {loop['state']}.",
                )
            st.rerun()

    st.dialog(action.title.format(version=version), on_dismiss=close_confirmation)(body)()


def arms_frame(canary: dict[str, Any]) -> pd.DataFrame:
    """The two arms' live figures side by side, one row per figure."""
    arms = canary.get("arms") or {}
    figures = [
        ("turns", "turns"),
        ("rated turns", "rated"),
        ("thumbs down", "down"),
        ("thumbs-down rate", "down_rate"),
        ("errors", "errors"),
        ("error rate", "error_rate"),
    ]

    def shown(value: Any, key: str) -> str:
        if value is None:
            return "—"
        return f"{value:.1%}" if key.endswith("_rate") else str(value)

    return pd.DataFrame(
        {
            "figure": [label for label, _ in figures],
            **{
                arm: [shown((arms.get(arm) or {}).get(key), key) for _, key in figures]
                for arm in ARMS
            },
        }
    )


def monitor_frame(history: list[dict[str, Any]]) -> pd.DataFrame:
    """Each monitor's figure per arm and check, in long form (missing figures left out)."""
    rows = []
    for check, point in enumerate(history, start=1):
        for key, label in MONITORS.items():
            for arm in ARMS:
                value = point.get(f"{arm}_{key}")
                if isinstance(value, int | float) and not isinstance(value, bool):
                    rows.append(
                        {
                            "check": check,
                            "at": point.get("at"),
                            "monitor": label,
                            "arm": arm,
                            "value": value,
                        }
                    )
    return pd.DataFrame(rows, columns=["check", "at", "monitor", "arm", "value"])


def monitor_chart(frame: pd.DataFrame) -> alt.FacetChart:
    """One small chart per monitor: canary and control over the trial's checks."""
    monitors = [m for m in MONITORS.values() if m in set(frame["monitor"])]
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("check:O", title="check", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("value:Q", title=None, axis=alt.Axis(format="~r")),
            color=alt.Color("arm:N", sort=list(ARMS), title=None, legend=alt.Legend(orient="top")),
            tooltip=["check", "at", "monitor", "arm", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=200, height=150)
        .facet(facet=alt.Facet("monitor:N", sort=monitors, title=None), columns=3)
        .resolve_scale(y="independent")
    )


def events_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    """The loop's decisions, newest first, figures as JSON text."""
    return pd.DataFrame(
        [
            {
                "at": stamp(e["at"]),
                "kind": e["kind"],
                "version": e.get("version"),
                "by": e["actor"],
                "message": e["message"],
                "figures": json.dumps(e["figures"]) if e.get("figures") else None,
            }
            for e in events
        ],
        columns=["at", "kind", "version", "by", "message", "figures"],
    )


def show_state(loop: Json) -> None:
    """State, signals against the trigger, last and next round, and who runs the loop."""
    settings = loop.get("settings") or {}
    last = loop.get("last_round") or {}
    state, signals, last_round, next_round = st.columns(4)
    state.metric("Loop state", loop["state"])
    trigger = settings.get("min_signals")
    signals.metric(
        "New signals",
        f"{loop['new_signals']} of {trigger}" if trigger else str(loop["new_signals"]),
        help="Ratings by trusted users since the last round's snapshot; a round starts when "
        "they reach the trigger (min_signals), or on schedule.",
    )
    last_round.metric(
        "Last round",
        last.get("status") or "none yet",
        help=last.get("message"),
    )
    next_round.metric("Next round", stamp(loop.get("next_round_at")) or "—")
    if loop["alive"]:
        st.caption(
            f"`rl-trainer online` runs as {loop.get('holder')}, "
            f"last heartbeat {stamp(loop.get('heartbeat_at'))}."
        )
    else:
        st.caption(
            "No `rl-trainer online` holds the loop: start it with `ONLINE_TRAINING=true make "
            "run`, or `rl-trainer online`. Requests made here wait for it."
        )
    if loop["paused"]:
        st.warning(
            f"Paused: {loop.get('paused_reason') or 'no reason given'}", icon=":material/pause:"
        )
    if loop.get("train_requested"):
        st.info("A round is asked for: it waits for the loop's next check.")
    if last.get("message"):
        st.caption(
            f"Last round{' ' + last['id'] if last.get('id') else ''}: {last['message']} "
            f"({stamp(last.get('started_at'))} to {stamp(last.get('finished_at')) or 'now'})"
        )
    if settings:
        with st.expander("Loop settings"):
            st.dataframe(
                pd.DataFrame(
                    {"setting": list(settings), "value": [str(v) for v in settings.values()]}
                ),
                hide_index=True,
            )


def show_canary(canary: Json) -> None:
    """The version on trial, its arms side by side, the last check and the monitors."""
    started = stamp(canary.get("started_at")) or "?"
    st.markdown(
        f"**Canary:** `{canary['version']}` serves {canary['share']:.0%} of users "
        f"(since {started}); control is the version serving everyone else."
    )
    st.dataframe(arms_frame(canary), hide_index=True)
    check = canary.get("last_check") or {}
    if check:
        tripped = check.get("tripped") or []
        line = f"Last check: **{check.get('action', '?')}**: {check.get('reason', '')}"
        if tripped:
            st.error(f"{line} (tripped: {', '.join(tripped)})")
        else:
            st.info(line)
    frame = monitor_frame(canary.get("history") or [])
    if frame.empty:
        st.caption("No monitor figures yet: the loop records them at each check of the trial.")
    else:
        st.markdown("**Monitors, canary against control**")
        st.altair_chart(monitor_chart(frame))


def show_loop(api: ApiClient, loop: Json) -> None:
    """The whole "Online loop" section, controls included."""
    st.subheader("Online loop")
    show_state(loop)
    canary = loop.get("canary")
    names = ["resume" if loop["paused"] else "pause", "train"]
    if canary:
        names += ["promote", "rollback"]
    with st.container(horizontal=True):
        for name in names:
            action = ACTIONS[name]
            st.button(
                action.button, icon=action.icon, key=f"ask-{name}", on_click=ask, args=(name,)
            )
        st.button("Refresh", icon=":material/refresh:", key="loop-refresh")
    outcome = st.session_state.pop(OUTCOME, None)
    if outcome is not None:
        level, message = outcome
        (st.success if level == "success" else st.error)(message)
    pending = st.session_state.get(PENDING)
    if pending in ACTIONS:
        confirmation(api, pending, canary["version"] if canary else "the canary")

    if canary:
        show_canary(canary)
    else:
        st.caption("No version is on canary trial now.")
    events = loop.get("events") or []
    if events:
        st.markdown("**Decisions** (newest first)")
        st.dataframe(
            events_frame(events),
            hide_index=True,
            column_config={"figures": st.column_config.JsonColumn("figures")},
        )
