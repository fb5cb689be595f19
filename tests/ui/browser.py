"""Driving the UI in headless Chromium: ``streamlit run`` against an API, and signing in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.app.conftest import ROOT, stop, wait_http
from tests.conftest import free_port
from tests.ui.conftest import HOME

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def streamlit_ui(api_url: str) -> Iterator[str]:
    """``streamlit run ui/Home.py`` as ``make run`` starts it, on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(HOME),
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "FLYWHEEL_API_URL": api_url},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_stcore/health", proc, timeout=60)
        yield url
    finally:
        stop(proc)


def sign_in(browser: Any, ui_url: str, key: str) -> Any:
    """A new page of the UI, signed in with ``key``."""
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.goto(ui_url)
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in").click()
    return page
