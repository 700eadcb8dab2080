"""Real headless Chromium for page tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download is not reachable here, so tests launch the system browser
(``make browser-deps`` installs it with apt; /work/shared/notes/browser-tests.md). ``page``
opens a page with console and page errors collected, for the test to assert on
(``async_page`` the same for async tests). Tests skip,
saying why, where the browser or the playwright package is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def chromium_path() -> str:
    """The browser executable, or a pytest skip saying how to get it."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip(
            f"no Chromium at {CHROMIUM}: run `make browser-deps` (apt-get install chromium)"
        )
    return path


@dataclass
class BrowserPage:
    """An open page and everything it reported."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return self.console_errors + self.page_errors


@contextmanager
def page(*args: str, timeout_ms: float = 15_000) -> Iterator[BrowserPage]:
    """A fresh page in headless Chromium (``args``: extra command-line switches, e.g. a fake
    microphone); console ``error`` messages and uncaught page errors are collected."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", *args]
        )
        try:
            tab = browser.new_page()
            tab.set_default_timeout(timeout_ms)
            out = BrowserPage(tab)
            tab.on(
                "console",
                lambda m: out.console_errors.append(m.text) if m.type == "error" else None,
            )
            tab.on("pageerror", lambda e: out.page_errors.append(str(e)))
            yield out
        finally:
            browser.close()


@asynccontextmanager
async def async_page(*args: str, timeout_ms: float = 15_000) -> AsyncIterator[BrowserPage]:
    """``page`` for async tests (Playwright's async API on the running loop)."""
    async_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")
    executable = chromium_path()
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", *args]
        )
        try:
            tab = await browser.new_page()
            tab.set_default_timeout(timeout_ms)
            out = BrowserPage(tab)
            tab.on(
                "console",
                lambda m: out.console_errors.append(m.text) if m.type == "error" else None,
            )
            tab.on("pageerror", lambda e: out.page_errors.append(str(e)))
            yield out
        finally:
            await browser.close()
