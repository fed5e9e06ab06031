"""What the rating page asks the server, request by request, in real Chromium: arriving costs no
API request (the join assigns the first pair and the one after it, the page embeds them), each
answered pair costs one API request (its answer carries the next pair and the one after) and the
two clips of a pair, and the last pair's answer ends the session without another request.

Before the join carried the first pair and the last pair said so, an evaluator of 3 pairs made 5
API requests (`GET next` on arrival, 3 submits, `GET next?after=` for the last pair) and loaded
the done page after the last answer; now 3 and none."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from app.rating.models import Trial
from tests.kit.browser import DESKTOP
from tests.kit.rating import invite_token, link
from tests.kit.studies import CRITERIA, rating_study

pytestmark = pytest.mark.browser

MIN_VIEW = 0.3


def record(page, base: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Every network request of the page as 'METHOD path' under the study's `base`
    (`/rate`, `/api/...`, `/media`), static files left out; object URLs are not requests."""
    seen: list[str] = []

    def on_request(request) -> None:  # type: ignore[no-untyped-def]
        if request.url.startswith(("blob:", "data:")):
            return
        path = urlsplit(request.url).path
        if path.startswith("/static/"):
            return
        path = path.removeprefix(base)
        seen.append(f"{request.method} {'/media' if path.startswith('/media/') else path}")

    page.on("request", on_request)
    return seen


def wait_for_pair(page, n: int) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "(n) => document.getElementById('progress-n').textContent === String(n)"
        " && !document.getElementById('stage').classList.contains('is-loading')",
        arg=n,
    )


def answer(page) -> None:  # type: ignore[no-untyped-def]
    for _ in CRITERIA:
        page.keyboard.press("2")
    time.sleep(MIN_VIEW)
    page.keyboard.press("Enter")


def split_at_api(seen: list[str]) -> tuple[list[str], list[list[str]]]:
    """The API requests, and the other requests before, between and after them."""
    api, segments = [], [[]]
    for item in seen:
        if "/api/" in item:
            api.append(item)
            segments.append([])
        else:
            segments[-1].append(item)
    return api, segments


@pytest.mark.parametrize("pairs", [1, 4])
def test_one_api_request_per_pair(live_server, chromium, session, settings, pairs):
    study = rating_study(
        session, settings, prompts=4, trials_per_evaluator=pairs, min_view_seconds=MIN_VIEW
    )
    base, invite = link(settings, study), invite_token(settings, study)
    context = chromium.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.goto(f"{live_server}{base}?invite={invite}")
    seen = record(page, base)
    page.click("form.start button[type=submit]")
    page.wait_for_url(f"**{base}/rate")
    for n in range(1, pairs + 1):
        wait_for_pair(page, n)
        answer(page)
    page.wait_for_url(f"**{base}/done")
    code = page.locator("#completion-code").inner_text()
    assert page.title() == "Thank you · Video comparison"
    assert page.locator("#done-answered").inner_text() == f"{pairs} pair{'' if pairs == 1 else 's'}"
    time.sleep(0.5)  # anything the page would still ask
    context.close()
    assert not problems, problems

    session.commit()
    trials = session.scalars(select(Trial).order_by(Trial.position)).all()
    assert len(trials) == pairs
    evaluator = trials[0].evaluator
    assert code == evaluator.completion_code and len(code) == 10
    # Arriving: the start button's form POST (which joins and assigns the first pair and the
    # one after it) and the page it leads to; no API request.
    assert seen[:2] == ["POST /join", "GET /rate"]
    api, segments = split_at_api(seen[2:])
    # Then one API request per pair, its answer: nothing else, and nothing after the last.
    assert api == [f"POST /api/trials/{t.id}/votes" for t in trials]
    assert segments[-1] == []
    # And each pair's two clips, once, one pair ahead: the first two pairs' on arrival, then
    # with each answer the clips of the pair after the next, none after the last two.
    media = [len(s) for s in segments]
    assert all(s == ["GET /media"] * len(s) for s in segments)
    assert media == [2 * min(pairs, 2)] + [2] * max(pairs - 2, 0) + [0] * min(pairs, 2)
    assert sum(media) == 2 * pairs


def test_a_reload_asks_nothing_either(live_server, chromium, session, settings):
    """The rating page reloaded mid-session shows the current pair from its own config (read
    only, no API request) and prefetches the pair already assigned after it."""
    study = rating_study(
        session, settings, prompts=4, trials_per_evaluator=3, min_view_seconds=MIN_VIEW
    )
    base, invite = link(settings, study), invite_token(settings, study)
    context = chromium.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{live_server}{base}?invite={invite}")
    page.click("form.start button[type=submit]")
    wait_for_pair(page, 1)
    answer(page)
    wait_for_pair(page, 2)
    shown = page.evaluate("document.getElementById('prompt').textContent")
    seen = record(page, base)
    page.reload()
    wait_for_pair(page, 2)
    assert page.evaluate("document.getElementById('prompt').textContent") == shown
    time.sleep(0.3)
    # The page and the clips of pair 2 (again: a new page) and of pair 3 (the last).
    assert seen == ["GET /rate"] + ["GET /media"] * 4
    answer(page)
    wait_for_pair(page, 3)
    answer(page)
    page.wait_for_url(f"**{base}/done")
    assert [s for s in seen if "/api/" in s] == [
        f"POST /api/trials/{t.id}/votes"
        for t in session.scalars(select(Trial).where(Trial.position > 1).order_by(Trial.position))
    ]
    context.close()
