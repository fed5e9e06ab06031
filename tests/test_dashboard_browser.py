"""The dashboard in real Chromium: it changes within seconds of a vote cast through the
evaluator JSON API, without a reload; and it lays out at a laptop and a phone width."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.browser import PHONE
from tests.conftest import ADMIN_PASSWORD
from tests.rating_factories import link, rating_study
from tests.results_factories import cast_votes

pytest_plugins = ["tests.browser"]  # the chromium fixture

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
    session.rollback()
    page = chromium_page
    page.goto(f"{live_server}/admin/login?next=/admin/studies/{study.slug}/dashboard")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/admin/studies/{study.slug}/dashboard")
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
