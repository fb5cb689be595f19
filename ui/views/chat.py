"""Chat: threads in the sidebar, streamed answers with their sources, a rating on each.

An answer streams token by token from ``POST /chat``; when it is done the page reruns
and draws the thread from ``GET /threads/{id}``, so what is shown is what was stored
(and can be rated). Ratings are sent the moment a thumb is clicked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import chain
from typing import Any

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.common import client, flash, show_flash

THREAD = "thread_id"
COLLECTION = "collection"
ALL = "All my documents"
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def select_thread(thread_id: str | None) -> None:
    """Show ``thread_id`` (None: a new chat)."""
    st.session_state[THREAD] = thread_id


def delete_thread(api: ApiClient, thread_id: str) -> None:
    """Delete a thread; leave it if it was open."""
    try:
        api.delete_thread(thread_id)
    except ApiError as exc:
        flash(exc.message, "error")
        return
    if st.session_state.get(THREAD) == thread_id:
        st.session_state[THREAD] = None
    flash("Thread deleted.")


def rate(api: ApiClient, turn_id: str, widget_key: str) -> None:
    """Send the thumb just clicked (0 = down, 1 = up); un-clicked, take the rating back."""
    value = st.session_state.get(widget_key)
    try:
        if value is None:  # the thumb was un-clicked: take the rating back
            api.unrate(turn_id)
        else:
            api.feedback(turn_id, 1 if value == 1 else -1)
    except ApiError as exc:
        flash(exc.message, "error")
        return
    flash("Rating removed." if value is None else "Thanks! Your rating was saved.")


def sidebar(api: ApiClient) -> None:
    """New chat, the user's threads (open, delete) and the collection to search."""
    with st.sidebar:
        st.button(
            "New chat", icon=":material/add:", on_click=select_thread, args=(None,), width="stretch"
        )
        try:
            threads = api.threads()
            documents = api.documents()
        except ApiError as exc:
            st.error(exc.message)
            return
        if threads:
            st.caption("Threads")
        current = st.session_state.get(THREAD)
        for thread in threads:
            left, right = st.columns([5, 1], vertical_alignment="center")
            left.button(
                thread["title"] or "Untitled",
                key=f"open-{thread['id']}",
                type="primary" if thread["id"] == current else "tertiary",
                on_click=select_thread,
                args=(thread["id"],),
                width="stretch",
            )
            right.button(
                "",
                icon=":material/delete:",
                key=f"delete-{thread['id']}",
                help="Delete this thread",
                type="tertiary",
                on_click=delete_thread,
                args=(api, thread["id"]),
            )
        collections = sorted({d["collection"] for d in documents})
        st.selectbox(
            "Search in",
            [ALL, *collections],
            key=COLLECTION,
            help="Which of your document collections the assistant searches.",
        )


def quote(passage: str) -> str:
    """A passage as a Markdown quote; its headings become bold lines, not page headings."""
    lines = [HEADING.sub(r"**\1**", line) for line in passage.strip().splitlines()]
    return "\n".join(f"> {line}" for line in lines) or "> (empty)"


def show_sources(turn_id: str, sources: list[dict[str, Any]]) -> None:
    """The passages an answer was given, numbered as its citations are."""
    if not sources:
        return
    cited = sum(1 for s in sources if s.get("cited"))
    label = f"Sources ({len(sources)}" + (f", {cited} cited)" if cited else ")")
    with st.expander(label, icon=":material/menu_book:", key=f"sources-{turn_id}"):
        for source in sources:
            where = [source.get("title") or "Untitled"]
            if source.get("page") is not None:
                where.append(f"page {source['page']}")
            if source.get("heading") and source["heading"] != where[0]:
                where.append(source["heading"])
            mark = ""
            if source.get("cited"):
                # An attached citation was matched to the answer after the fact: say so.
                attached = source.get("origin") == "attached"
                mark = " · **cited** (matched to the answer)" if attached else " · **cited**"
            st.markdown(f"**[{source['number']}]** {' · '.join(where)}{mark}")
            st.markdown(quote(source.get("text") or ""))


def feedback_form(api: ApiClient, turn: dict[str, Any]) -> None:
    """A rating with a comment and a better answer, for when a thumb is not enough."""
    with (
        st.popover("Comment", icon=":material/edit_note:", key=f"comment-{turn['id']}"),
        st.form(f"feedback-{turn['id']}", clear_on_submit=True, border=False),
    ):
        verdict = st.radio(
            "Rating",
            ["Good answer", "Bad answer"],
            index=1 if turn.get("rating") == -1 else 0,
            horizontal=True,
            key=f"verdict-{turn['id']}",
        )
        comment = st.text_area("Comment (optional)", key=f"note-{turn['id']}")
        better = st.text_area("A better answer (optional)", key=f"better-{turn['id']}")
        if st.form_submit_button("Send"):
            rating = 1 if verdict == "Good answer" else -1
            try:
                api.feedback(
                    turn["id"], rating, comment=comment or None, corrected_answer=better or None
                )
            except ApiError as exc:
                st.error(exc.message)
            else:
                flash("Thanks! Your feedback was saved.")
                st.rerun()


def show_turn(api: ApiClient, turn: dict[str, Any]) -> None:
    """A stored question and answer, with sources and rating."""
    with st.chat_message("user"):
        st.markdown(turn["question"])
    with st.chat_message("assistant"):
        if turn.get("error"):
            st.error(f"This answer failed: {turn['error']}")
        if turn.get("answer"):
            st.markdown(turn["answer"])
        show_sources(turn["id"], turn.get("sources", []))
        rating_key = f"rating-{turn['id']}"
        with st.container(horizontal=True, vertical_alignment="center", gap="medium"):
            st.feedback(
                "thumbs",
                key=rating_key,
                default={1: 1, -1: 0}.get(turn.get("rating") or 0),
                on_change=rate,
                args=(api, turn["id"], rating_key),
            )
            feedback_form(api, turn)
            if turn.get("adapter_version"):
                st.caption(f"adapter {turn['adapter_version']}")


def ask(api: ApiClient, question: str) -> None:
    """Stream the answer to ``question``, then rerun to show it as stored."""
    collection = st.session_state.get(COLLECTION)
    events = api.chat_stream(
        question,
        thread_id=st.session_state.get(THREAD),
        collection=None if collection in (None, ALL) else collection,
    )
    outcome: dict[str, Any] = {}

    def tokens() -> Iterator[str]:
        for event in events:
            if event.kind == "token":
                yield event.data["text"]
            else:
                outcome[event.kind] = event.data

    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        stream = tokens()
        try:
            with st.spinner("Searching your documents and thinking…"):
                first = next(stream, "")
            st.write_stream(chain([first], stream))
        except ApiError as exc:
            st.error(exc.message)
            return
    ended = outcome.get("done") or outcome.get("error") or {}
    if ended.get("thread_id"):
        st.session_state[THREAD] = ended["thread_id"]
    if "error" in outcome:
        flash(f"The answer failed: {outcome['error'].get('message', 'unknown error')}", "error")
    st.rerun()


api = client()
sidebar(api)
show_flash()
thread_id = st.session_state.get(THREAD)
thread: dict[str, Any] | None = None
if thread_id:
    try:
        thread = api.thread(thread_id)
    except ApiError as exc:
        st.session_state[THREAD] = None
        st.error(exc.message)
if thread:
    st.subheader(thread["title"] or "Untitled")
    for turn in thread["turns"]:
        show_turn(api, turn)
else:
    st.subheader("New chat")
    st.caption("Ask about your documents; the answer cites the passages it used.")
question = st.chat_input("Ask about your documents…")
if question:
    ask(api, question)
