"""Flywheel's web UI: ``streamlit run ui/Home.py`` (``make run`` starts it on loopback).

This entry script signs the user in, then hands over to ``st.navigation``: Chat,
Documents and Memory for everyone, Model for admins. The banner above every page comes
from the API's ``/health`` (demo model, services down), so it is drawn here, once.
"""

from __future__ import annotations

import streamlit as st

from ui.common import is_admin, sign_in, sign_out, signed_in, status_banner
from ui.settings import get_settings


def sign_in_page() -> None:
    """Ask for an API key and check it with the API."""
    st.title("Flywheel")
    st.write(
        "Chat with your documents. Answers cite their sources, remember what you tell "
        "them, and get better from your ratings."
    )
    with st.form("sign-in"):
        key = st.text_input(
            "API key",
            value=get_settings().api_key,
            type="password",
            help="`make run` prints the admin's key on first start; create more with "
            "`python -m app.users create NAME`.",
        )
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        with st.spinner("Checking the key…"):
            error = sign_in(key)
        if error:
            st.error(error)
        else:
            st.rerun()


st.set_page_config(page_title="Flywheel", page_icon=":material/cyclone:", layout="wide")
status_banner()

if not signed_in():
    page = st.navigation([st.Page(sign_in_page, title="Sign in", icon=":material/login:")])
else:
    pages = [
        st.Page("views/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("views/documents.py", title="Documents", icon=":material/description:"),
        st.Page("views/memory.py", title="Memory", icon=":material/psychology:"),
    ]
    if is_admin():
        pages.append(st.Page("views/model.py", title="Model", icon=":material/model_training:"))
    page = st.navigation(pages)
    with st.sidebar:
        st.caption("Signed in as an admin" if is_admin() else "Signed in")
        st.button("Sign out", icon=":material/logout:", on_click=sign_out)
page.run()
