"""The admin pages in real Chromium on a real server: log in, upload, filter, move, log out."""

from __future__ import annotations

import csv
import re

import pytest

from tests.kit.admin import ADMIN_PASSWORD
from tests.kit.browser import PHONE
from tests.kit.paths import EXAMPLE_STUDY

EXAMPLE_PROMPTS = EXAMPLE_STUDY.parent / "prompts.csv"
STUDY_NAME = "AnimateDiff-Lightning vs AnimateDiff"

pytestmark = pytest.mark.browser


def sports_prompts() -> int:
    with EXAMPLE_PROMPTS.open(newline="") as file:
        return sum(row["theme"] == "sports" for row in csv.DictReader(file))


def fits_the_viewport(page) -> bool:  # type: ignore[no-untyped-def]
    """No sideways scrolling of the page itself (wide tables scroll inside their box)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_admin_flow_in_chromium(live_server, chromium_page, shots):
    from playwright.sync_api import expect

    page = chromium_page
    page.goto(f"{live_server}/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=%2Fadmin%2F$"))
    page.screenshot(path=shots / "login-desktop.png")
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_server}/admin/")
    expect(page.get_by_text("No studies yet")).to_be_visible()

    # A broken CSV is refused with its line; then the founding study goes in through the form.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New study").click()
    broken = shots / "broken-prompts.csv"
    broken.write_text("prompt,theme,seed\na red fox,wildlife,1\n,urban,2\n")
    page.get_by_label("Study file (TOML)").set_input_files(EXAMPLE_STUDY)
    page.get_by_label("Prompts (CSV)").set_input_files(broken)
    page.get_by_role("button", name="Create study").click()
    expect(page.get_by_role("alert")).to_contain_text("broken-prompts.csv:3:1: prompt is empty")
    page.screenshot(path=shots / "new-errors-desktop.png", full_page=True)
    page.get_by_label("Study file (TOML)").set_input_files(EXAMPLE_STUDY)
    page.get_by_label("Prompts (CSV)").set_input_files(EXAMPLE_PROMPTS)
    page.get_by_role("button", name="Create study").click()
    expect(page).to_have_url(f"{live_server}/admin/studies/lightning-vs-animatediff")
    expect(page.get_by_role("status")).to_contain_text("Created study")
    expect(page.get_by_role("heading", level=1)).to_have_text(STUDY_NAME)
    page.screenshot(path=shots / "study-desktop.png", full_page=True)

    # It is listed.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Studies").click()
    row = page.get_by_role("row", name=re.compile(STUDY_NAME))
    expect(row).to_contain_text("draft")
    expect(row).to_contain_text("100")
    page.screenshot(path=shots / "list-desktop.png", full_page=True)
    row.get_by_role("link").click()

    # Filter by theme.
    themes = page.get_by_role("navigation", name="Filter prompts by theme")
    themes.get_by_role("link", name=re.compile(r"^sports\b")).click()
    expect(page).to_have_url(re.compile(r"\?theme=sports$"))
    theme_cells = page.locator("table.prompts tbody td:nth-child(3)")
    expect(theme_cells).to_have_count(sports_prompts())
    assert set(theme_cells.all_inner_texts()) == {"sports"}

    # Move it to rendering.
    page.get_by_role("button", name="Move to rendering").click()
    expect(page.get_by_role("status")).to_contain_text("is now rendering")
    expect(page.locator(".status-card .badge")).to_have_text("rendering")

    # The same pages on a phone.
    page.set_viewport_size(PHONE)
    page.screenshot(path=shots / "study-phone.png")
    assert fits_the_viewport(page)
    for section in ("arms", "prompts"):
        box = page.locator(f"section[aria-labelledby={section}-heading]")
        box.screenshot(path=shots / f"study-phone-{section}.png")
    page.goto(f"{live_server}/admin/")
    page.screenshot(path=shots / "list-phone.png")
    assert fits_the_viewport(page)

    # Log out: the admin pages are gone.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{live_server}/admin/login")
    expect(page.get_by_role("status")).to_contain_text("Signed out")
    page.screenshot(path=shots / "login-phone.png")
    page.goto(f"{live_server}/admin/studies/lightning-vs-animatediff")
    expect(page).to_have_url(re.compile(r"/admin/login\?next="))
