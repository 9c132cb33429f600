"""The playground page in a real browser (headless Chromium through Playwright): type a prompt,
see the answer stream in, hover a token for its probability and alternatives.

Playwright cannot download its own browser here; it drives Debian's ``chromium`` package
(``.ci/run`` installs it). Without it the test is skipped, saying so.
"""

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_chat_streams_and_shows_token_probabilities(server, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)
            sync_api.expect(page.locator("#model")).to_contain_text("tiny")
            page.fill("#max_tokens", "12")
            page.fill("#prompt", "the cat sat")
            page.click("#send")
            sync_api.expect(page.locator(".msg.user")).to_have_text("youthe cat sat")
            assistant = page.locator(".msg.assistant .token")
            sync_api.expect(assistant.first).to_be_visible(timeout=30_000)  # tokens stream in
            sync_api.expect(page.locator("#send")).to_have_text("Send", timeout=30_000)  # done
            tokens = page.locator(".msg.assistant .token")
            assert 1 <= tokens.count() <= 12  # one span per token (an end of turn may come first)
            tokens.nth(0).hover()
            tooltip = page.locator("#tooltip")
            sync_api.expect(tooltip).to_be_visible()
            sync_api.expect(tooltip).to_contain_text("%")
            assert tooltip.locator("tr").count() == 5  # the top 5 alternatives
            page.screenshot(path=str(tmp_path / "playground.png"))
            assert page.locator("#error").inner_text() == ""
        finally:
            browser.close()
