"""A real headless Chromium (Debian's `chromium` package) driven by Playwright, for the page tests.

Where the browser or Playwright is missing the tests skip with the reason, except under CI (`CI=true`), where they
fail: .ci/run installs both. Every request other than the page's own file is refused and recorded, so a test can
assert that the page asked for nothing.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

# Chromium's own background traffic (updates, sync, QUIC probes) stays off: the machine has no network.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = os.environ.get("ALIGN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        found, why = None, "Playwright for Python is not installed (pip install -r requirements.txt)"
    else:
        why = "no Chromium on this machine (apt-get install chromium, or set ALIGN_CHROMIUM)"
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test under CI: {why}")
        pytest.skip(why)
    return found


@contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page opened from file://, with its console errors and every request it tried."""

    def __init__(self, browser, path: Path, width: int = 1300):
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        url = Path(path).resolve().as_uri()

        def route(r):
            if r.request.url == url:
                r.continue_()
            else:
                self.requests.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)
        self.page.goto(url)

    def visible_rows(self) -> list[str]:
        """The experiment table's shown rows, by run name (the first cell's text, without its baseline mark)."""
        return self.page.eval_on_selector_all(
            "#exp-table tbody tr", "rs => rs.filter(r => !r.hidden).map(r => r.cells[0].firstChild.textContent.trim())"
        )
