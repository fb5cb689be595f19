"""Feedback given in a real browser starts an online round, and the Model page shows it.

What ``ONLINE_TRAINING=true make run`` runs, on the tiny model: the model server, the API,
the UI and ``rl-trainer online``, each its own process over one store. A user asks in
Chromium and sends a bad rating with a better answer from the page's feedback form; the
loop, triggered by one new signal, trains and gates a round by itself, and the admin
finds that round on the Model page.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import ROOT, Api, ModelServer, create_user, start_api, stop
from tests.conftest import wait_until
from tests.rl_trainer.conftest import trainer_env
from tests.ui.browser import CHROMIUM, CHROMIUM_ARGS, sign_in, streamlit_ui
from tests.ui.conftest import DOC, loop_now, upload_ready

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium"),
]
RECIPE = ["--recipe", "tiny-dpo", "--set", "max_steps=1"]
ROUND_ENDS = {"gate_rejected", "canary_started", "round_failed", "monitor_tripped"}


@pytest.fixture
def loop_stack(
    model_server: ModelServer, tiny_chat_model: Path, tmp_path: Path
) -> Iterator[tuple[Api, subprocess.Popen[bytes]]]:
    """Its own API and store (a round may publish), and the loop on them."""
    api = start_api(tmp_path / "data", model_server.url, AGENT_MAX_TOKENS="16")
    env = trainer_env(tmp_path / "data", model_server, tiny_chat_model)
    env |= {"ONLINE_MIN_SIGNALS": "1", "ONLINE_POLL_S": "1"}
    log = (tmp_path / "online.log").open("wb")
    trainer = subprocess.Popen(
        [sys.executable, "-m", "rl_trainer.cli", "online", *RECIPE],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield api, trainer
    finally:
        stop(trainer)
        stop(api.proc)
        log.close()


def test_a_rating_in_the_browser_starts_a_round_shown_on_the_model_page(
    loop_stack: tuple[Api, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    api, trainer = loop_stack
    key = create_user(api, "loop-admin", admin=True)
    upload_ready(api, key, "boiling.md", DOC.encode())
    wait_until(lambda: loop_now(api, key)["alive"], 120, what="rl-trainer online to take the lock")
    assert loop_now(api, key)["last_round"]["status"] is None  # no round before the rating

    def events() -> list[dict[str, Any]]:
        return list(loop_now(api, key)["events"])

    with streamlit_ui(api.url) as ui, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = sign_in(browser, ui, key)
            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_visible(timeout=30_000)
            box.fill("At what temperature does water boil?")
            box.press("Enter")
            expect(page.get_by_test_id("stFeedback")).to_have_count(1, timeout=180_000)

            # A bad rating with a better answer, through the page's feedback form.
            page.get_by_role("button", name="Comment").click()
            page.get_by_text("Bad answer").click()
            page.get_by_label("A better answer (optional)").fill(
                "Water boils at 100 degrees Celsius at sea level [1]."
            )
            page.get_by_role("button", name="Send", exact=True).click()
            expect(page.get_by_text("Thanks! Your feedback was saved.")).to_be_visible()

            started = wait_until(
                lambda: [e for e in events() if e["kind"] == "round_started"],
                60,
                what="the loop to start a round from the browser's rating",
            )
            assert "1 new signals (trigger: 1)" in started[0]["message"]
            ended = wait_until(
                lambda: [e for e in events() if e["kind"] in ROUND_ENDS],
                300,
                what="the round to train and gate",
            )
            assert trainer.poll() is None, "the loop goes on after a round"
            last = loop_now(api, key)["last_round"]
            assert last["status"] == "done", (last, ended)

            page.get_by_role("link", name="Model").click()
            expect(page.get_by_role("heading", name="Online loop")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(f"Last round {last['id']}")).to_be_visible()
            expect(page.get_by_test_id("stException")).to_have_count(0)
            page.screenshot(path=str(tmp_path / "model-round.png"), full_page=True)
        finally:
            browser.close()
