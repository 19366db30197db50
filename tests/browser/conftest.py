"""Browser tests of the web terminal: Playwright for Python driving Debian's Chromium.

Chromium is the system's (/usr/bin/chromium, installed by apt; never ``playwright install``).
When it is missing every test here is skipped with that reason. Screenshots of each page go
to ``artifacts/screenshots/`` (git-ignored) for people to look at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from web_steps import CHROMIUM_ARGS, CHROMIUM_PATH, EXPECT_TIMEOUT_MS


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
