"""Browser tests of the web terminal: Playwright for Python driving Debian's Chromium.

Chromium is the system's (/usr/bin/chromium, installed by apt; never ``playwright install``).
When it is missing every test here is skipped with that reason. Screenshots of each page go
to ``artifacts/screenshots/`` (git-ignored) for people to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATH = os.environ.get("CONSORTIUM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
EXPECT_TIMEOUT_MS = 15_000
"""The longest one expectation waits; generous because the machine is shared."""

_COMPLETE = re.compile(r"[^a-z0-9-]+")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            if not Path(CHROMIUM_PATH).exists():
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"Chromium not found at {CHROMIUM_PATH} "
                        "(install Debian's chromium package; .ci/run does)"
                    )
                )


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def new_page(browser: Any, base_url: str, *, lang: str = "pt") -> Any:
    """A fresh browser context (its own storage: one customer) on ``base_url``."""
    context = await browser.new_context(
        base_url=base_url,
        locale="pt-BR" if lang == "pt" else "en-US",
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Chromium logs every 4xx answer as "Failed to load resource"; the tests provoke those
    # on purpose, so only script errors count.
    page.on(
        "console",
        lambda message: errors.append(message.text)
        if message.type == "error" and not message.text.startswith("Failed to load resource")
        else None,
    )
    page.script_errors = errors  # read by the tests: the page must not throw
    return page


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{_COMPLETE.sub('-', name)}.png"
    await page.screenshot(path=str(path), full_page=True)


async def unlabelled_controls(page: Any) -> list[str]:
    """Visible inputs, selects and textareas with no label: must stay empty."""
    return await page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea'))
            .filter((e) => e.offsetParent !== null && e.type !== 'hidden')
            .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map((e) => e.outerHTML)"""
    )
