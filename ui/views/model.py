"""Model (admins): what serves, the online loop, every adapter version, users' ratings.

The online loop comes with its controls (pause, resume, train now, promote or roll back a
canary); each adapter version with what it trained on, its gate verdict and eval figures.

The charts answer "are answers getting better?": eval figures per version against the
base model, and the share of thumbs up per day and per version. Everything comes from
the admin routes, which refuse a user's key (403) whatever this page does.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ui.adapter_versions import show_versions
from ui.api_client import ApiError
from ui.common import client, is_admin
from ui.online_loop import show_loop

BASE = "base model"


def feedback_frame(stats: list[dict[str, Any]]) -> pd.DataFrame:
    """Ratings per day and adapter version (``None`` is the base model)."""
    frame = pd.DataFrame(stats, columns=["day", "adapter_version", "up", "down", "share_up"])
    frame["adapter_version"] = frame["adapter_version"].fillna(BASE)
    return frame


def per_version(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of thumbs up per adapter version, over all days."""
    totals = frame.groupby("adapter_version")[["up", "down"]].sum()
    totals["share_up"] = totals["up"] / (totals["up"] + totals["down"])
    return totals.reset_index()


def share_axis() -> alt.Y:
    """The y axis of both charts: a share between 0 and 100 %."""
    return alt.Y(
        "share_up:Q",
        title="share of thumbs up",
        scale=alt.Scale(domain=[0, 1]),
        axis=alt.Axis(format="%"),
    )


if not is_admin():
    st.error("This page needs an admin's API key.")
    st.stop()

api = client()
st.title("Model")
try:
    with st.spinner("Asking the API…"):
        serving = api.serving()
        loop = api.loop()
        adapters = api.adapters()
        stats = api.feedback_stats()
except ApiError as exc:
    st.error(exc.message)
    st.stop()

adapter = serving.get("adapter")
base, active, promoted = st.columns(3)
base.metric("Base model", serving["base_model"])
active.metric(
    "Adapter serving",
    adapter["served_name"] if adapter else "none",
    help=None if adapter else "No adapter is promoted: the base model answers every chat.",
)
promoted.metric("Promoted", str(adapter["promoted_at"])[:16].replace("T", " ") if adapter else "—")

show_loop(api, loop)
show_versions(adapters)

st.subheader("Ratings")
if not stats:
    st.info("No ratings yet: thumbs up and down in the chat show up here.")
else:
    frame = feedback_frame(stats)
    versions = per_version(frame)
    total_up, total_down = int(versions["up"].sum()), int(versions["down"].sum())
    st.caption(f"{total_up} thumbs up, {total_down} thumbs down in all.")
    by_day, by_version = st.columns(2)
    tooltip = ["adapter_version", "up", "down", alt.Tooltip("share_up", format=".0%")]
    with by_day:
        st.markdown("**Share of thumbs up per day**")
        daily = (
            alt.Chart(frame)
            .mark_line(point=True)
            .encode(
                x=alt.X("day:T", title="day"),
                y=share_axis(),
                color=alt.Color("adapter_version:N", title="adapter"),
                tooltip=["day", *tooltip],
            )
        )
        st.altair_chart(daily)
    with by_version:
        st.markdown("**Share of thumbs up per adapter version**")
        overall = (
            alt.Chart(versions)
            .mark_bar()
            .encode(
                x=alt.X("adapter_version:N", title="adapter"),
                y=share_axis(),
                color=alt.Color("adapter_version:N", legend=None),
                tooltip=tooltip,
            )
        )
        st.altair_chart(overall)
    st.dataframe(frame, hide_index=True)
