"""Headless Chromium for browser tests: Debian's chromium driven by Playwright's sync API.

Load the fixtures in a test module (pytest-playwright is not needed, nothing is downloaded):

    pytest_plugins = ["tests.browser"]

    def test_something(live_server, chromium_page):
        chromium_page.goto(live_server + "/admin/")

A missing Chromium or Playwright skips locally and fails under CI=true (see require_service).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service

CHROMIUM = Path(os.environ.get("VIDARENA_TEST_CHROMIUM", "/usr/bin/chromium"))
# Quiet, deterministic Chromium: no sandbox (containers, root), no GPU, no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium per test session (a playwright Browser)."""
    if not CHROMIUM.exists():
        require_service("Chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        require_service("Playwright", f"the playwright package is not installed: {exc}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def chromium_page(chromium: Any) -> Iterator[Any]:
    """A fresh page (own cookies) at a desktop viewport; failing expectations wait 10 s."""
    context = chromium.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where browser tests put screenshots: VIDARENA_TEST_SCREENSHOTS to keep and look at them,
    else the test's tmp folder."""
    folder = Path(os.environ.get("VIDARENA_TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
