"""What every page shares: the signed-in client, the demo banner, flash messages.

The API key lives in Streamlit's session state (per browser tab), never on disk. Flash
messages carry a result across ``st.rerun()`` (a callback's outcome, say) to the next run.
"""

from __future__ import annotations

from typing import Any, Literal

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.settings import get_settings

API_KEY = "api_key"
IS_ADMIN = "is_admin"
FLASH = "flash"

Level = Literal["success", "info", "warning", "error"]

DEMO_BANNER = (
    "**Demo model.** The API is serving the tiny built-in demo model: answers are not "
    "meaningful; set LLM_MODEL to a real model and restart."
)
SMALL_MODEL_BANNER = (
    "**Small offline model.** SmolLM2-135M-Instruct is answering{why}: it runs anywhere "
    "without a GPU, but expect short and sometimes wrong answers. To serve a bigger model, "
    "set LLM_MODEL to a local model folder or a reachable hub id (or MODEL_SERVER_URL to a "
    "vLLM server) and restart."
)
SMALL_MODEL = "smollm2"


def anonymous_client() -> ApiClient:
    """A client without a key (for ``/health`` and for trying a key at sign-in)."""
    s = get_settings()
    return ApiClient(s.api_url, timeout_s=s.request_timeout_s, chat_timeout_s=s.chat_timeout_s)


def client() -> ApiClient:
    """A client acting as the signed-in user."""
    s = get_settings()
    return ApiClient(
        s.api_url,
        st.session_state.get(API_KEY, ""),
        timeout_s=s.request_timeout_s,
        chat_timeout_s=s.chat_timeout_s,
    )


def signed_in() -> bool:
    """Whether this browser tab has signed in."""
    return bool(st.session_state.get(API_KEY))


def is_admin() -> bool:
    """Whether the signed-in key is an admin's."""
    return bool(st.session_state.get(IS_ADMIN))


def sign_in(key: str) -> str | None:
    """Check ``key`` with the API and keep it for this tab; an error message if refused."""
    key = key.strip()
    if not key:
        return "Enter your API key."
    s = get_settings()
    try:
        admin = ApiClient(s.api_url, key, timeout_s=s.request_timeout_s).is_admin()
    except ApiError as exc:
        return exc.message
    st.session_state[API_KEY] = key
    st.session_state[IS_ADMIN] = admin
    return None


def sign_out() -> None:
    """Forget this tab's key and everything learned with it."""
    for name in list(st.session_state.keys()):
        del st.session_state[name]


@st.cache_data(ttl=15, show_spinner=False)
def _health(api_url: str) -> tuple[dict[str, Any] | None, str | None]:
    """``/health`` of the API at ``api_url`` (cached briefly: every page asks for it)."""
    try:
        return anonymous_client().health(), None
    except ApiError as exc:
        return None, exc.message


def health() -> tuple[dict[str, Any] | None, str | None]:
    """The API's health report, or why it could not be had."""
    return _health(get_settings().api_url)


def status_banner() -> None:
    """The demo-model warning, or what is down, at the top of every page."""
    report, error = health()
    if error:
        st.error(error, icon=":material/cloud_off:")
        return
    assert report is not None
    served = report.get("model_server", {})
    if report.get("demo_model"):
        st.warning(DEMO_BANNER, icon=":material/science:")
    elif report.get("fallback") or served.get("model") == SMALL_MODEL:
        why = " because the configured model could not be loaded" if report.get("fallback") else ""
        st.info(SMALL_MODEL_BANNER.format(why=why), icon=":material/memory:")
    if report.get("status") != "ok":
        down = [
            name
            for name, ok in (
                ("the model server", report.get("model_server", {}).get("ok", False)),
                ("the database", report.get("database", False)),
                ("Qdrant", report.get("qdrant", False)),
            )
            if not ok
        ]
        st.error(
            f"The API is up but {' and '.join(down) or 'a service'} is not: chats may fail "
            "until it is back.",
            icon=":material/warning:",
        )


def flash(message: str, level: Level = "success") -> None:
    """Show ``message`` on the next run (after a callback or ``st.rerun()``)."""
    st.session_state[FLASH] = (level, message)


def show_flash() -> None:
    """Show and clear the pending flash message."""
    pending = st.session_state.pop(FLASH, None)
    if pending is None:
        return
    level, message = pending
    if level == "success":
        st.toast(message, icon=":material/check_circle:")
    else:
        getattr(st, level)(message)
