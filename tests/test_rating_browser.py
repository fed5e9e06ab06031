"""A whole rating session in real Chromium, keyboard only, on a phone and a laptop viewport."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, update

from app.clips.models import Clip
from app.rating.models import Trial, Vote
from app.studies.schemas import DEFAULT_CRITERIA
from tests.kit.browser import DESKTOP as LAPTOP
from tests.kit.browser import PHONE
from tests.kit.rating import invite_token, link
from tests.kit.studies import CRITERIA, mark_clips_done, rating_study

pytestmark = pytest.mark.browser

KEYS = ["1", "2", "3"]
CHOICE = {"1": "left", "2": "tie", "3": "right"}
MIN_VIEW = 0.6
PAIRS = 3


def focused(page) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate(
        "({tag: document.activeElement.tagName, name: document.activeElement.name || '',"
        " value: document.activeElement.value || '', text: document.activeElement.textContent})"
    )


def both_clips_shown(page) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate(
        """() => ['clip-left', 'clip-right'].every(id => {
            const img = document.getElementById(id);
            return img.complete && img.naturalWidth > 0 && img.src.startsWith('blob:')
                && getComputedStyle(img).visibility === 'visible';
        })"""
    )


def in_view(page, selector: str) -> bool:  # type: ignore[no-untyped-def]
    box = page.locator(selector).bounding_box()
    height = page.viewport_size["height"]
    return box is not None and box["y"] >= -1 and box["y"] + box["height"] <= height + 1


@pytest.mark.parametrize("viewport", ["phone", "laptop"])
def test_keyboard_only_session(
    live_server, chromium, session, settings, shots, viewport, database_url
):
    criteria = [c.key for c in DEFAULT_CRITERIA]
    study = rating_study(
        session,
        settings,
        prompts=4,
        trials_per_evaluator=PAIRS,
        min_view_seconds=MIN_VIEW,
        criteria=criteria,
    )
    base, invite = link(settings, study), invite_token(settings, study)
    db = "pg" if database_url.startswith("postgresql") else "sqlite"
    size = PHONE if viewport == "phone" else LAPTOP
    context = chromium.new_context(viewport=size, device_scale_factor=1)
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    api_calls: list[str] = []
    page.on(
        "request",
        lambda r: (
            api_calls.append(f"{r.method} {r.url.split('/api/')[1]}") if "/api/" in r.url else None
        ),
    )

    page.goto(f"{live_server}{base}?invite={invite}")
    page.screenshot(path=str(shots / f"rate-{viewport}-{db}-0-welcome.png"), full_page=True)
    assert "Start rating" in focused(page)["text"]  # autofocus: Enter starts
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{base}/rate")

    pressed: list[list[str]] = []
    for n in range(1, PAIRS + 1):
        page.wait_for_selector("#stage:not(.is-loading)")
        assert page.locator("#progress-title").inner_text() == f"Pair {n} of {PAIRS}"
        assert both_clips_shown(page)
        assert focused(page)["name"] == criteria[0]  # ready to answer at once
        if n == 1:
            # Accessible structure: every question a fieldset with a legend, every radio labelled.
            assert page.locator("fieldset.criterion > legend").count() == len(criteria)
            assert page.evaluate(
                "[...document.querySelectorAll('input[type=radio]')]"
                ".every(r => r.labels.length === 1 && r.labels[0].textContent.trim())"
            )
            page.keyboard.press("Enter")  # nothing answered yet
            assert "Please answer every question" in page.locator("#form-message").inner_text()
            assert focused(page)["name"] == criteria[0]
            before = page.evaluate("document.getElementById('clip-left').src")
            page.keyboard.press("r")  # replay both: fresh object URLs restart both GIFs
            page.wait_for_function(
                "(before) => { const img = document.getElementById('clip-left');"
                " return img.src !== before && img.complete; }",
                arg=before,
            )
        keys = [KEYS[(i + n) % 3] for i in range(len(criteria))]
        for key in keys:
            page.keyboard.press(key)
        pressed.append(keys)
        assert focused(page)["tag"] == "BUTTON"  # the last answer moves focus to Submit
        if viewport == "phone":
            assert in_view(page, "#clip-left") and in_view(page, "#clip-right")  # sticky clips
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        if n == 1 and viewport == "laptop":
            # A message under the questions does not push Submit off a 1280 x 800 screen.
            page.evaluate("document.getElementById('form-message').textContent = 'x '.repeat(90)")
            assert in_view(page, "#submit")
            page.evaluate("document.getElementById('form-message').textContent = ''")
        if n == 1:
            page.screenshot(path=str(shots / f"rate-{viewport}-{db}-1-answered.png"))
            page.keyboard.press("Enter")  # too soon: the minimum viewing time is not over
            message = page.locator("#form-message").inner_text()
            assert "keep watching" in message or page.url.endswith("/rate")
        time.sleep(MIN_VIEW)
        page.keyboard.press("Enter")
        if n < PAIRS:
            page.wait_for_function(
                "(n) => document.getElementById('progress-n').textContent === String(n)",
                arg=n + 1,
            )
    page.wait_for_url(f"**{base}/done")
    code = page.locator("#completion-code").inner_text()
    assert len(code) == 10
    page.screenshot(path=str(shots / f"rate-{viewport}-{db}-2-done.png"), full_page=True)
    context.close()
    assert not problems, problems

    # What the keys said is what was stored, one vote per criterion, in order.
    session.commit()
    trials = session.scalars(select(Trial).order_by(Trial.position)).all()
    assert [t.position for t in trials] == list(range(1, PAIRS + 1))
    # The first pair came with the page (the join assigned it and the one after it); then the
    # answers, each carrying the next pair and the one after, and the last one `done`. The last
    # pair said it was the last: nothing is asked for after it (tests/test_rating_requests_browser
    # counts every request).
    assert api_calls == [f"POST trials/{t.id}/votes" for t in trials]
    for trial, keys in zip(trials, pressed, strict=True):
        votes = dict(
            session.execute(
                select(Vote.criterion, Vote.choice).where(Vote.trial_id == trial.id)
            ).all()
        )
        assert votes == {c: CHOICE[k] for c, k in zip(criteria, keys, strict=True)}
        server = (trial.answered_at - trial.shown_at).total_seconds()
        assert server >= MIN_VIEW
        # The page's own timing went with each answer, within what the server saw.
        assert trial.client_view_seconds >= MIN_VIEW
        assert trial.client_load_seconds + trial.client_view_seconds <= server


def test_a_waiting_evaluator_carries_on_by_itself(
    live_server, chromium, session, settings, shots, database_url
):
    """Started while clips render: after the pairs that are ready the page waits (no done page,
    no completion code) and carries on by itself once the next pair's clips are done."""
    study = rating_study(session, settings, prompts=3, trials_per_evaluator=3, done=False)
    mark_clips_done(session, settings, study, prompt_ids=[p.id for p in study.prompts[:2]])
    last = study.prompts[2]
    session.execute(update(Clip).where(Clip.prompt_id == last.id).values(status="rendering"))
    session.commit()
    base, invite = link(settings, study), invite_token(settings, study)
    db = "pg" if database_url.startswith("postgresql") else "sqlite"
    context = chromium.new_context(viewport=LAPTOP, device_scale_factor=1)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{live_server}{base}?invite={invite}")
    assert "You will see 3 pairs" in page.locator("main").inner_text()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{base}/rate")
    for n in (1, 2):
        page.wait_for_function(
            "(n) => document.getElementById('progress-n').textContent === String(n)"
            " && !document.getElementById('stage').classList.contains('is-loading')",
            arg=n,
        )
        for _ in CRITERIA:
            page.keyboard.press("2")
        page.keyboard.press("Enter")
    page.wait_for_selector("#stage.is-waiting")
    assert "being prepared" in page.locator("#stage-status").inner_text()
    assert page.locator("#progress-title").inner_text() == "Pair 3 of 3"
    page.screenshot(path=str(shots / f"rate-waiting-{db}.png"))
    assert page.url.endswith("/rate")
    mark_clips_done(session, settings, study, prompt_ids=[last.id])
    session.commit()
    page.wait_for_selector("#stage:not(.is-loading)", timeout=20_000)  # within a retry or two
    assert both_clips_shown(page)
    for _ in CRITERIA:
        page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{base}/done")
    context.close()
