"""Memory: what the assistant remembers about me, each item deletable, or all at once.

Memories are written by the API after a chat (mem0 extracts facts about the user); this
page only reads and forgets them. Forgetting everything asks for confirmation first.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.common import client, flash, health, show_flash

# Set while the "forget everything" dialog is open, so it survives a rerun of the page.
CONFIRM = "confirm_forget_all"


def forget(api: ApiClient, memory: dict[str, Any]) -> None:
    """Forget one memory."""
    try:
        api.forget(memory["id"])
    except ApiError as exc:
        flash(exc.message, "error")
    else:
        flash(f"Forgotten: {memory['text']}")


def close_confirmation() -> None:
    """Stop asking (the dialog was dismissed or answered)."""
    st.session_state.pop(CONFIRM, None)


@st.dialog("Forget everything?", on_dismiss=close_confirmation)
def confirm_forget_all(api: ApiClient, count: int) -> None:
    """Ask before deleting every memory."""
    st.write(
        f"The assistant will forget all {count} things it remembers about you. "
        "This cannot be undone."
    )
    yes, no = st.columns(2)
    if no.button("Cancel", width="stretch"):
        close_confirmation()
        st.rerun()
    if yes.button("Yes, forget everything", type="primary", width="stretch"):
        close_confirmation()
        try:
            deleted = api.forget_all()
        except ApiError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Forgot {deleted} memories.")
        st.rerun()


api = client()
st.title("Memory")
show_flash()
st.caption(
    "What the assistant remembers about you from your chats; it uses these to personalise "
    "answers. Delete anything you do not want it to keep."
)
report, _ = health()
if report is not None and not report.get("memory", True):
    st.info("Memory is turned off on this server (MEMORY_ENABLED=false): nothing is kept.")

try:
    with st.spinner("Loading memories…"):
        memories = api.memories()
except ApiError as exc:
    st.error(exc.message)
    st.stop()

if not memories:
    st.info("Nothing remembered yet. Tell the assistant about yourself in a chat.")
else:
    st.subheader(f"{len(memories)} things remembered")
    for memory in memories:
        text, when, delete = st.columns([7, 2, 1], vertical_alignment="center")
        text.write(memory["text"])
        stamp = memory.get("updated_at") or memory.get("created_at")
        when.caption(str(stamp)[:16].replace("T", " ") if stamp else "")
        delete.button(
            "",
            icon=":material/delete:",
            key=f"forget-{memory['id']}",
            help="Forget this",
            on_click=forget,
            args=(api, memory),
        )
    st.divider()
    if st.button("Forget everything", icon=":material/delete_forever:"):
        st.session_state[CONFIRM] = True
    if st.session_state.get(CONFIRM):
        confirm_forget_all(api, len(memories))
