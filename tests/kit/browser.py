"""Headless Chromium for browser tests: Debian's chromium driven by Playwright's sync API
(pytest-playwright is not needed, nothing is downloaded). The fixtures `chromium`,
`chromium_page` and `shots` are in tests/conftest.py; here are the browser, its viewports and
signing in as the admin:

    def test_something(live_server, chromium_page):
        sign_in(chromium_page, live_server)

A missing Chromium or Playwright skips locally and fails under CI=true (see require_service).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.kit.admin import ADMIN_PASSWORD

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


def sign_in(page: Any, live_server: str, next_url: str | None = None) -> None:
    """Sign in on the login page (with `?next=NEXT_URL` when given) and wait for the page it
    leads to (the admin home by default)."""
    page.goto(f"{live_server}/admin/login" + (f"?next={next_url}" if next_url else ""))
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{next_url}" if next_url else f"{live_server}/admin/")
