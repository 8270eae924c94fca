"""Real headless Chromium for browser tests: Debian's `chromium` driven by Playwright.

Playwright's own browser downloads are never used (`playwright install` is not run): the
tests launch `/usr/bin/chromium`, which `.ci/run` installs from Debian's packages. Without
it (or without the `playwright` package) the tests skip on a developer's machine and FAIL
when `CI=true`, so CI can never pass by skipping them.

`OriginGuard` records every request a page makes; a test asserts that none left the
gateway's own origin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def require_chromium() -> None:
    """Skip without Chromium or Playwright; fail instead when `CI=true`."""
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (apt-get install -y --no-install-recommends chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def chromium() -> Iterator[Browser]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class OriginGuard:
    """Every URL a page requested; `foreign()` lists those of another origin."""

    def __init__(self, page: Page, origin: str) -> None:
        self.origin = origin
        self.urls: list[str] = []
        page.on("request", self._record)

    def _record(self, request: Request) -> None:
        self.urls.append(request.url)

    def foreign(self) -> list[str]:
        own = urlsplit(self.origin)
        bad = []
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about"):
                continue
            if (parts.scheme, parts.netloc) != (own.scheme, own.netloc):
                bad.append(url)
        return bad


def new_page(browser: Browser, origin: str, **context: Any) -> tuple[Page, OriginGuard]:
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(30_000)
    return page, OriginGuard(page, origin)
