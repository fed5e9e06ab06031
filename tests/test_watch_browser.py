"""Watch telemetry and the Prolific redirect in real Chromium: an evaluator from a Prolific link
rates two pairs, watching the first for a few loops with the tab hidden a while; the stored
trials carry loops and the hidden time, and the last answer sends the page to the study's
completion URL with its code.

Hiding the tab: headless Chromium keeps a page visible when another tab comes to the front
(checked first; if it does hide it, the real thing is used), so the test sets
`document.visibilityState` to "hidden" and dispatches `visibilitychange`, as a browser does
when the tab goes to the background, and back again."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, update

from app.clips.models import Clip
from app.rating.models import Evaluator, Trial
from tests.kit.browser import DESKTOP
from tests.kit.rating import link
from tests.kit.studies import CRITERIA, rating_study, study_clips

pytestmark = pytest.mark.browser

LOOP_S = 0.48  # each clip's measured loop
CODE = "C1BROWSER"
PROLIFIC = "https://app.prolific.com/submissions/complete?cc={code}"
SET_VISIBILITY = """(state) => {
    Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
    Object.defineProperty(document, 'hidden', {value: state === 'hidden', configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
}"""


def hide_for(page, context, seconds: float) -> str:  # type: ignore[no-untyped-def]
    """Hide the rating page's tab for `seconds`: really when another tab in front hides it,
    else emulated. Which one it was."""
    other = context.new_page()
    other.bring_to_front()
    really = page.evaluate("document.visibilityState") == "hidden"
    if not really:
        page.evaluate(SET_VISIBILITY, "hidden")
    time.sleep(seconds)
    if really:
        page.bring_to_front()
    else:
        page.evaluate(SET_VISIBILITY, "visible")
    other.close()
    return "real" if really else "emulated"


def answer(page) -> None:  # type: ignore[no-untyped-def]
    for _ in CRITERIA:
        page.keyboard.press("2")
    page.keyboard.press("Enter")


def test_telemetry_is_stored_and_the_last_answer_goes_back_to_prolific(
    live_server, chromium, session, settings
):
    from playwright.sync_api import expect  # imported here: no Playwright, the fixture skips

    study = rating_study(
        session,
        settings,
        prompts=3,
        open_enrollment=True,
        trials_per_evaluator=2,
        completion_url=PROLIFIC,
        completion_code=CODE,
    )
    session.execute(
        update(Clip)
        .where(Clip.id.in_([c.id for c in study_clips(session, study)]))
        .values(duration_ms=round(LOOP_S * 1000))
    )
    session.commit()
    base = link(settings, study)
    context = chromium.new_context(viewport=DESKTOP, device_scale_factor=1)
    context.set_default_timeout(10_000)
    returned: list[str] = []

    def platform(route) -> None:  # type: ignore[no-untyped-def]
        returned.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p>Prolific</p>")

    context.route("https://app.prolific.com/**", platform)  # nothing leaves the test machine
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.goto(f"{live_server}{base}?PROLIFIC_PID=pb1&STUDY_ID=st1&SESSION_ID=se1")
    page.click("form.start button")
    page.wait_for_url(f"**{base}/rate")

    page.wait_for_selector("#stage:not(.is-loading)")
    time.sleep(3 * LOOP_S)  # three loops on screen
    hidden = hide_for(page, context, 0.8)
    time.sleep(0.2)
    answer(page)
    expect(page.locator("#progress-n")).to_have_text("2")
    page.wait_for_selector("#stage:not(.is-loading)")
    time.sleep(1.5 * LOOP_S)
    answer(page)
    page.wait_for_url("https://app.prolific.com/**")
    context.close()
    assert not problems, problems
    assert returned == [f"https://app.prolific.com/submissions/complete?cc={CODE}"]

    session.commit()
    first, second = session.scalars(select(Trial).order_by(Trial.position)).all()
    for trial in (first, second):
        assert trial.loops_left is not None and trial.loops_right is not None
        server = (trial.answered_at - trial.shown_at).total_seconds()
        # What the page measured fits in what the server saw.
        assert (trial.loops_left * LOOP_S) + trial.hidden_seconds <= server + 0.1
    # Three loops, then 0.8 s hidden (not counted), then 0.2 s more: about 3.4 loops a side.
    assert 3.0 <= first.loops_left <= 3.4 + (first.client_load_seconds or 0) / LOOP_S + 1
    assert abs(first.loops_left - first.loops_right) < 0.2  # side by side, both on screen
    assert first.watched_both is True
    assert 0.7 <= first.hidden_seconds <= 1.5, hidden
    assert second.loops_left >= 1.4 and second.watched_both is True
    assert second.hidden_seconds < 0.1
    ev = session.scalars(select(Evaluator)).one()
    assert (ev.external_id, ev.external_study_id, ev.external_session_id) == ("pb1", "st1", "se1")
    assert ev.completion_code == CODE
