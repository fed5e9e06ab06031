"""The dashboard in real Chromium: it changes within seconds of a vote cast through the
evaluator JSON API, without a reload; and it lays out at a laptop and a phone width."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.kit.browser import DESKTOP, PHONE, sign_in
from tests.kit.clips import imported_study
from tests.kit.rating import link
from tests.kit.studies import rating_study
from tests.kit.votes import cast_votes

pytestmark = pytest.mark.browser

RATES = {"video_text_relevance": 0.7, "motion_naturalness": 0.5, "overall_quality": 0.4}


def vote_through_the_api(base: str, path: str) -> None:
    """A new evaluator joins and answers one pair, over HTTP, as a survey tool would."""
    with httpx.Client(base_url=base, timeout=10) as http:
        joined = http.post(f"{path}/api/join", json={})
        assert joined.status_code == 200, joined.text
        auth = {"Authorization": f"Bearer {joined.json()['evaluator_token']}"}
        trial = http.get(f"{path}/api/next", headers=auth).json()["trial"]
        votes = {
            "video_text_relevance": "left",
            "motion_naturalness": "tie",
            "overall_quality": "right",
        }
        answered = http.post(
            f"{path}/api/trials/{trial['id']}/votes", json={"votes": votes}, headers=auth
        )
        assert answered.status_code == 200, answered.text


def test_dashboard_changes_after_a_vote_without_a_reload(
    live_server, chromium_page, session, settings, tmp_path, database_url
):
    from playwright.sync_api import expect  # imported here: no Playwright, the fixture skips

    study = rating_study(session, settings, slug="watched", prompts=4, open_enrollment=True)
    cast_votes(
        session, settings, study, favored="quokka-arm", rates=RATES, evaluators=1, max_trials=1
    )
    # End the test's transaction without expiring `study`: reloading it would begin a write
    # transaction (SQLite: the write lock) that the app's sign-in (a session row) waits behind.
    session.commit()
    page = chromium_page
    sign_in(page, live_server, f"/admin/studies/{study.slug}/dashboard")
    votes = page.locator('[data-stat="votes"]')
    assert votes.inner_text() == "3"
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.evaluate("window.notReloaded = true")

    started = time.monotonic()
    vote_through_the_api(live_server, link(settings, study))
    expect(votes).to_have_text("6", timeout=5000)
    assert time.monotonic() - started < 3.0
    assert page.evaluate("window.notReloaded") is True  # the same page, updated in place
    assert "Live · updated" in page.inner_text("#live-status")

    shots = Path(os.environ.get("VIDARENA_TEST_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"dashboard-laptop-{database_url[:6]}.png"), full_page=True)
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the page must not scroll sideways on a phone"
    page.screenshot(path=str(shots / f"dashboard-phone-{database_url[:6]}.png"), full_page=True)


# --- layout: nothing clipped, nothing wider than its box --------------------------------------

# Every visible element inside <main> must lie within its container, horizontally: its parent,
# or for a chart's SVG shapes and labels the box holding the SVG. Inside a box that scrolls
# sideways (overflow-x auto or scroll) content may be wider: it scrolls there, not clipped.
OVERFLOW_JS = """
() => {
  const out = [];
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth) out.push(`page is ${root.scrollWidth}px wide`);
  const scrolls = (el) => ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
  const scrolled = (el) => {
    for (let a = el.parentElement; a && a.tagName !== "MAIN"; a = a.parentElement) {
      if (scrolls(a)) return true;
    }
    return false;
  };
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.classList.length ? "." + [...el.classList].join(".") : "");
  for (const el of document.querySelectorAll("main *")) {
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1 || scrolled(el)) continue;  // hidden, or scrolls
    const svg = el.ownerSVGElement ? el.closest("figure > svg, div > svg") : null;
    const container = svg ? svg.parentElement : el.parentElement;
    const limit = container.getBoundingClientRect();
    const over = Math.max(box.right - limit.right, limit.left - box.left);
    if (over > 1) out.push(`${name(el)} sticks out of ${name(container)} by ${over.toFixed(0)}px` +
      ` ("${(el.textContent || "").trim().slice(0, 40)}")`);
  }
  return out;
}
"""


SCROLLING_TABLES_JS = """
() => [...document.querySelectorAll(".table-scroll")]
  .filter((box) => box.scrollWidth > box.clientWidth + 1)
  .map((box) => `${box.closest("[id]").id}: ${box.scrollWidth} > ${box.clientWidth}px`)
"""


def overflow(page, viewport) -> list[str]:  # type: ignore[no-untyped-def]
    """What sticks out; at a laptop's width also any table that has to scroll to be read."""
    found = page.evaluate(OVERFLOW_JS)
    if viewport == DESKTOP:
        found += page.evaluate(SCROLLING_TABLES_JS)
    return found


def test_nothing_is_clipped_in_the_dashboard_or_the_report(
    live_server, chromium_page, session, settings, tmp_path, database_url
):
    """Three arms with votes and render costs: at a laptop and a phone width, every table,
    chart and label of the dashboard (robustness panel included) and of report.html stays in
    its box; at a laptop's width every table fits, on a phone wide ones scroll in their box."""
    from playwright.sync_api import expect

    study = imported_study(
        session, settings, tmp_path, slug="layout",
        seconds={"zebra-arm": 21.0, "quokka-arm": 2.4, "narwhal-arm": 9.5},
    )  # fmt: skip
    page = chromium_page
    sign_in(page, live_server, f"/admin/studies/{study.slug}/dashboard")
    page.click("#advanced-body [data-load-advanced]")
    expect(page.locator("#advanced-body table").first).to_be_visible()
    report = page.request.get(f"{live_server}/admin/studies/{study.slug}/export/report.html")
    assert report.ok
    shots = Path(os.environ.get("VIDARENA_TEST_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    for label, viewport in (("laptop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.screenshot(
            path=str(shots / f"dashboard3-{label}-{database_url[:6]}.png"), full_page=True
        )
        assert overflow(page, viewport) == [], f"dashboard at {viewport}"
    report_page = page.context.new_page()
    report_page.set_content(report.text())
    for label, viewport in (("laptop", DESKTOP), ("phone", PHONE)):
        report_page.set_viewport_size(viewport)
        report_page.screenshot(
            path=str(shots / f"report3-{label}-{database_url[:6]}.png"), full_page=True
        )
        assert overflow(report_page, viewport) == [], f"report.html at {viewport}"
