"""The admin pages' layout in real Chromium at a laptop (1280 x 800) and a phone (390 x 844):
table headers line up with their columns, nothing is wider than the page or clipped in its box,
a refused upload keeps its files, links copy, and times read the same everywhere (24-hour UTC).

Screenshots go to VIDARENA_TEST_SCREENSHOTS when set (to look at them), else to tmp.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from app.clips.models import Clip, ClipStatus
from app.db import utcnow
from tests.kit.browser import DESKTOP, PHONE, sign_in
from tests.kit.studies import SMALL_PROMPTS_CSV, SMALL_STUDY_TOML, example_study, rating_study
from tests.kit.votes import cast_votes

pytestmark = pytest.mark.browser

UTC_TIME = r"\b\d\d:\d\d:\d\d UTC\b"
RATES = {"video_text_relevance": 0.7, "motion_naturalness": 0.5, "overall_quality": 0.4}
# Per table.data: [left, width] of each header cell and of each cell of the first body row.
CELL_BOXES = """() => {
  const boxes = (row) => Array.from(row.cells, (cell) => {
    const box = cell.getBoundingClientRect();
    return [box.left, box.width];
  });
  return Array.from(document.querySelectorAll("table.data"))
    .filter((t) => t.tHead && t.tBodies.length && t.tBodies[0].rows.length)
    .map((t) => ({
      table: t.closest("section[aria-labelledby]")?.getAttribute("aria-labelledby") || t.className,
      head: boxes(t.tHead.rows[0]),
      body: boxes(t.tBodies[0].rows[0]),
    }));
}"""
# Boxes whose content is wider than they are (scrolled or cut off on the right).
CLIPPED = """() => Array.from(document.querySelectorAll(".table-scroll, .card, .alert, main"))
  .filter((e) => e.scrollWidth > e.clientWidth + 1)
  .map((e) => e.className + " " + e.scrollWidth + ">" + e.clientWidth)"""


@pytest.fixture
def admin_page(chromium, live_server):  # type: ignore[no-untyped-def]
    """A signed-in admin in a context that may use the clipboard, recording failed requests."""
    context = chromium.new_context(viewport=DESKTOP, timezone_id="America/New_York", locale="en-US")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.failed = []  # type: ignore[attr-defined]
    page.on(
        "response",
        lambda r: r.status >= 400 and page.failed.append(f"{r.status} {r.url}"),  # type: ignore[attr-defined]
    )
    sign_in(page, live_server)
    yield page
    context.close()


def assert_laid_out(page: Any, *, columns_line_up: bool) -> int:
    """Check the page's layout; returns how many tables had their columns checked."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url}: the page scrolls sideways by {overflow}px"
    assert page.evaluate(CLIPPED) == [], page.url
    if not columns_line_up:  # phones show each row as a card, headers hidden
        return 0
    tables = page.evaluate(CELL_BOXES)
    for table in tables:
        assert len(table["head"]) == len(table["body"]), table
        for (head_x, head_w), (body_x, body_w) in zip(table["head"], table["body"], strict=True):
            assert abs(head_x - body_x) <= 1 and abs(head_w - body_w) <= 1, (page.url, table)
    return len(tables)


def test_admin_tables_line_up_and_fit_at_laptop_and_phone_widths(
    admin_page, live_server, session, settings, shots
):
    demo = example_study(session)
    # Every clip of the example study failed (as when queued without tiny models offline).
    error = "OSError: cannot reach huggingface.co to fetch emilianJR/epiCRealism (5 retries)"
    now = utcnow()
    session.execute(
        update(Clip).values(status=ClipStatus.failed, error=error, queued_at=now, finished_at=now)
    )
    session.commit()
    rated = rating_study(session, settings, slug="rated", prompts=4)
    session.rollback()

    page = admin_page
    pages = {
        "list": "/admin/",
        "study": f"/admin/studies/{demo.slug}",
        "invites": f"/admin/studies/{rated.slug}/invites",
    }
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        for name, path in pages.items():
            page.goto(live_server + path)
            if name == "invites":
                page.get_by_label("How many links").fill("3")
                page.get_by_role("button", name="Make invite links").click()
                page.get_by_role("button", name="Copy all 3 links").wait_for()
            page.screenshot(path=shots / f"layout-{name}-{label}.png", full_page=True)
            checked = assert_laid_out(page, columns_line_up=label == "desktop")
            if label == "desktop":  # render panel, analysis plan, arms, prompts: the study page
                assert checked == {"list": 1, "study": 4, "invites": 0}[name], (name, checked)
        # Every clip failed: the errors are in view, not folded into <details>.
        page.goto(live_server + pages["study"])
        alert = page.locator("#render .render-failed")
        assert alert.is_visible() and "cannot reach huggingface.co" in alert.inner_text()
    assert page.failed == [], page.failed  # favicon included


def test_a_refused_upload_keeps_its_files_and_lists_problems_in_order(
    admin_page, live_server, engine, shots, tmp_path
):
    page = admin_page
    toml = tmp_path / "study.toml"
    toml.write_text(
        SMALL_STUDY_TOML.format(slug="kept-in-browser")
        .replace('prompts = "prompts.csv"\n', "")  # not needed beside an uploaded CSV
        .replace('name = "fast"', 'name = "Fast Arm"')
    )
    broken = tmp_path / "broken.csv"
    broken.write_text("prompt,theme,seed\na red fox,wildlife,1\n,urban,2\nan owl,,3\n")
    page.goto(f"{live_server}/admin/studies/new")
    page.get_by_label("Study file (TOML)").set_input_files(toml)
    page.get_by_label("Prompts (CSV)").set_input_files(broken)
    page.get_by_role("button", name="Create study").click()
    problems = page.locator(".problems li").all_inner_texts()
    assert (
        problems[0].startswith("study.toml:")
        and "'Fast Arm' is not valid: use 1 to 63" in (problems[0])
    )
    assert problems[1:] == ["broken.csv:3:1: prompt is empty", "broken.csv:4:8: theme is empty"]
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.screenshot(path=shots / f"layout-new-errors-{label}.png", full_page=True)
        assert_laid_out(page, columns_line_up=False)
    assert page.get_by_text("Kept from your last try: broken.csv").is_visible()

    # Fix the study file only: the CSV is still the one uploaded (so still refused) ...
    fixed_toml = tmp_path / "fixed.toml"
    fixed_toml.write_text(toml.read_text().replace('"Fast Arm"', '"fast"'))
    page.get_by_label("Study file (TOML)").set_input_files(fixed_toml)
    page.get_by_role("button", name="Create study").click()
    assert page.locator(".problems li").all_inner_texts() == problems[1:]
    # ... then the CSV only: the fixed study file was kept.
    fixed_csv = tmp_path / "fixed.csv"
    fixed_csv.write_text(SMALL_PROMPTS_CSV)
    page.get_by_label("Prompts (CSV)").set_input_files(fixed_csv)
    page.get_by_role("button", name="Create study").click()
    page.wait_for_url(f"{live_server}/admin/studies/kept-in-browser")
    assert "2 arms, 2 prompts, 4 clips pending." in page.get_by_role("status").inner_text()


def test_copy_buttons_copy_the_links(admin_page, live_server, session, settings):
    rated = rating_study(session, settings, slug="copied", prompts=2)
    session.rollback()
    page = admin_page
    page.goto(f"{live_server}/admin/studies/{rated.slug}/invites")
    study_link = page.locator("#study-link").inner_text()
    page.get_by_role("button", name="Copy link").click()
    # The Clipboard API answers asynchronously: expect() polls from here (the page's CSP
    # forbids the eval a wait_for_function string needs) until the message is there.
    expect(page.locator("#study-link-copied")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == study_link

    page.get_by_label("How many links").fill("2")
    page.get_by_role("button", name="Make invite links").click()
    links = page.locator("#invite-links").input_value()
    assert len(links.splitlines()) == 2
    # Plain http on a LAN address has no Clipboard API: the fallback selects and copies.
    page.evaluate(
        "Object.defineProperty(navigator, 'clipboard', { value: undefined, configurable: true })"
    )
    page.get_by_role("button", name="Copy all 2 links").click()
    expect(page.locator("#invite-links-copied")).to_have_text("Copied.")
    page.evaluate("delete navigator.clipboard")  # the real one again, to read what was copied
    assert page.evaluate("navigator.clipboard.readText()") == links


def test_times_are_24_hour_utc_whatever_the_viewers_locale(
    admin_page, live_server, session, settings
):
    from playwright.sync_api import expect

    study = rating_study(session, settings, slug="timed", prompts=4, open_enrollment=True)
    cast_votes(session, settings, study, favored="quokka-arm", rates=RATES, evaluators=1)
    session.rollback()
    page = admin_page  # a New York, en-US browser: its own clock would say "03:08:14 PM"
    page.goto(f"{live_server}/admin/studies/{study.slug}/dashboard")
    expect(page.locator("#live-status")).to_contain_text("Live · updated", timeout=15_000)
    for text in (page.inner_text("#live-status"), page.locator("dd time").first.inner_text()):
        assert re.search(UTC_TIME, text) and not re.search(r"\b[AP]M\b", text), text
    page.goto(f"{live_server}/admin/studies/{study.slug}")
    status = page.locator('#render [data-field="render-status"]')
    expect(status).to_contain_text("UTC")
    assert re.search(UTC_TIME, status.inner_text()), status.inner_text()


def test_render_panel_offers_the_errors_when_rendering_stops_with_failures(
    admin_page, live_server, session
):
    from playwright.sync_api import expect

    study = example_study(session)
    session.execute(update(Clip).values(status=ClipStatus.queued, tiny=True, queued_at=utcnow()))
    session.commit()
    page = admin_page
    page.goto(f"{live_server}/admin/studies/{study.slug}")
    status = page.locator('#render [data-field="render-status"]')
    expect(status).to_contain_text("Rendering… updated")
    assert page.get_by_label("tiny models (demo, no downloads)").is_checked()  # as queued

    # Every clip fails while the page is open: the panel says so and offers the errors.
    error = "OSError: We couldn't connect to 'https://huggingface.co' to load this model"
    session.execute(update(Clip).values(status=ClipStatus.failed, error=error))
    session.commit()
    expect(status).to_contain_text("Rendering stopped at")
    assert re.search(UTC_TIME, status.inner_text())
    status.get_by_role("link", name="Reload to see the errors").click()
    expect(page.locator("#render .render-failed")).to_contain_text("couldn't connect")
    assert page.get_by_label("tiny models (demo, no downloads)").is_checked()
