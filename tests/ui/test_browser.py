"""The chat in a real browser: headless Chromium against ``streamlit run`` and the API.

AppTest runs the scripts but not the web front end; this drives the page a person sees:
sign in, ask, watch the answer stream in, click thumbs up, and find the rating stored;
on the Model page, pause the online loop through its confirmation dialog.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import Api, auth
from tests.conftest import wait_until
from tests.ui.browser import CHROMIUM, CHROMIUM_ARGS, sign_in, streamlit_ui
from tests.ui.conftest import DOC, loop_now, rows, upload_ready

pytestmark = pytest.mark.slow


@pytest.fixture
def ui_url(api: Api) -> Iterator[str]:
    """The UI against the session's API."""
    with streamlit_ui(api.url) as url:
        yield url


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium to drive")
def test_chat_in_a_real_browser(
    api: Api, ui_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    key = keys["admin"]  # an admin sees every page, the Model page too
    upload_ready(api, key, "boiling-browser.md", DOC.encode())
    question = "How hot is boiling water on Everest?"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = sign_in(browser, ui_url, key)

            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_visible(timeout=30_000)
            box.fill(question)
            box.press("Enter")

            # The streamed answer is stored, then drawn with its sources and a rating.
            thumbs = page.get_by_test_id("stFeedback")
            expect(thumbs).to_have_count(1, timeout=180_000)
            turn = rows(api, "SELECT * FROM turns WHERE question = :q", q=question)[-1]
            messages = page.get_by_test_id("stChatMessage")
            expect(messages).to_have_count(2)
            expect(messages.nth(0)).to_contain_text(question)
            # The tiny model's words can hold control characters the page drops: check
            # the first plain word of the stored answer is what the page shows.
            plain = [w for w in turn["answer"].split() if w.isascii() and w.isalnum()]
            expect(messages.nth(1)).to_contain_text(plain[0])
            expect(page.get_by_text("Sources (")).to_be_visible()

            thumbs.get_by_test_id("stFeedbackButton").first.click()
            expect(thumbs.get_by_test_id("stFeedbackButtonActive")).to_have_count(1)
            stored = wait_until(
                lambda: [
                    r["rating"]
                    for r in rows(
                        api, "SELECT rating FROM feedback WHERE turn_id = :id", id=turn["id"]
                    )
                ],
                30,
                what="the rating to be stored",
            )
            assert stored == [1]

            page.get_by_text("Sources (").click()
            expect(page.get_by_text("Water boils at 100 degrees Celsius").first).to_be_visible()
            page.wait_for_timeout(1000)  # the expander's opening animation
            page.screenshot(path=str(tmp_path / "chat.png"))

            # The other pages draw without an error; screenshots to look at.
            for name, heading in [
                ("Documents", "Documents"),
                ("Memory", "Memory"),
                ("Model", "Model"),
            ]:
                page.get_by_role("link", name=name).click()
                expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
                expect(page.get_by_test_id("stException")).to_have_count(0)
                page.wait_for_timeout(1500)  # let charts and tables finish drawing
                page.screenshot(path=str(tmp_path / f"{name.lower()}.png"))
        finally:
            browser.close()
    assert (tmp_path / "chat.png").stat().st_size > 10_000


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium to drive")
def test_pause_the_loop_in_a_real_browser(
    api: Api, ui_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    key = keys["admin"]
    assert loop_now(api, key)["paused"] is False
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = sign_in(browser, ui_url, key)
            page.get_by_role("link", name="Model").click()
            expect(page.get_by_role("heading", name="Online loop")).to_be_visible(timeout=30_000)

            # The button only asks; the dialog's "Yes" pauses, with the reason typed there.
            page.get_by_role("button", name="Pause").click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text("Pause the online loop?")
            assert loop_now(api, key)["paused"] is False, "not before yes"
            dialog.get_by_label("Reason (other admins see it)").fill("paused from the browser")
            dialog.get_by_label("Reason (other admins see it)").press("Tab")
            dialog.get_by_role("button", name="Yes, pause").click()
            expect(dialog).to_have_count(0)
            paused = wait_until(
                lambda: loop_now(api, key)["paused"], 30, what="the API to report the loop paused"
            )
            assert paused is True
            assert loop_now(api, key)["paused_reason"] == "paused from the browser"
            expect(page.get_by_text("Paused: paused from the browser")).to_be_visible()
            expect(page.get_by_role("heading", name="Ratings")).to_be_visible()
            expect(page.get_by_test_id("stException")).to_have_count(0)
            page.screenshot(path=str(tmp_path / "model-paused.png"), full_page=True)

            page.get_by_role("button", name="Resume").click()
            page.get_by_role("dialog").get_by_role("button", name="Yes, resume").click()
            wait_until(lambda: not loop_now(api, key)["paused"], 30, what="the loop to be resumed")
            expect(page.get_by_role("button", name="Pause")).to_be_visible()
        finally:
            browser.close()
            if loop_now(api, key)["paused"]:  # leave the loop as other tests expect it
                httpx.post(f"{api.url}/admin/loop/resume", headers=auth(key))
