"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright (it never downloads a
browser here), and the page helpers every browser test uses."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                    "(apt-get install chromium chromium-driver)")


@contextmanager
def chromium() -> Iterator:
    """A launched headless browser, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str, width: int = 1440, height: int = 900):
    """A new page of `url` at that viewport, once the Run button is there."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#run")
    return page


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input").first
    box.fill(str(value))
    box.press("Tab")


def wait_state(page, state: str, selector: str = "#progress") -> None:
    """Wait until the progress bar under `selector` shows `state` (running, done, cancelled, error, ...)."""
    page.wait_for_selector(f'{selector} .studio-progress[data-state="{state}"]')
