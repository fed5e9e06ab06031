"""Text people write, in real Chromium at 1280 x 800 and 390 x 844: the longest words a study
allows wrap on every page that shows them (no page scrolls sideways), and a direction override
already stored in a row (from before such characters were refused) cannot reverse the text
around it.

Screenshots go to VIDARENA_TEST_SCREENSHOTS when set (to look at them), else to tmp.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from app.studies.models import Prompt, Study, StudyStatus
from tests.kit.admin import log_in, upload
from tests.kit.browser import DESKTOP, PHONE, sign_in
from tests.kit.rating import link
from tests.kit.studies import mark_clips_done
from tests.kit.votes import cast_votes

pytestmark = pytest.mark.browser

# The longest unbroken word each field allows (the study file's limits).
NAME = "N" * 200
DESCRIPTION = "D" * 5_000
PROMPT = "P" * 1_000
THEME = "T" * 100
LABEL = "L" * 80
QUESTION = "Q" * 299 + "?"
MODEL = "owner/" + "M" * 490
CODE = "C" * 64
LONG_TOML = f"""
name = "{NAME}"
slug = "long-words"
description = "Short words first, then {DESCRIPTION}"
criteria = ["overall_quality", {{ key = "long", label = "{LABEL}", question = "{QUESTION}" }}]
[render]
num_frames = 4
width = 64
height = 64
fps = 8
[rating]
open_enrollment = true
completion_code = "{CODE}"
[[arms]]
name = "slow"
kind = "animatediff"
base_model = "{MODEL}"
motion_adapter = "{MODEL}"
steps = 2
guidance_scale = 7.5
[[arms]]
name = "fast"
kind = "animatediff-lightning"
base_model = "emilianJR/epiCRealism"
motion_adapter = "ByteDance/AnimateDiff-Lightning"
steps = 1
guidance_scale = 1.0
"""
LONG_CSV = f"prompt,theme,seed\n{PROMPT},{THEME},1\na red fox running,{THEME},2\n"
RATES = {"overall_quality": 0.7, "long": 0.4}
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"
# Whether the first two characters of the element's text are laid out left to right.
READS_LEFT_TO_RIGHT = """(element) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  let node = walker.nextNode();
  while (node && node.data.trim().length < 2) node = walker.nextNode();
  const start = node.data.search(/\\S/);
  const box = (i) => { const r = document.createRange(); r.setStart(node, i);
    r.setEnd(node, i + 1); return r.getBoundingClientRect().left; };
  return box(start) < box(start + 1);
}"""


@pytest.fixture
def long_study(client, session, settings) -> Study:  # type: ignore[no-untyped-def]
    """The study uploaded through the admin form, rendered (clips done), open and rated."""
    assert log_in(client).status_code == 303
    response = upload(client, LONG_TOML.encode(), LONG_CSV.encode())
    assert response.status_code == 303, response.text[-3000:]
    study = session.scalar(select(Study).where(Study.slug == "long-words"))
    mark_clips_done(session, settings, study)
    study.status = StudyStatus.open
    session.commit()
    cast_votes(session, settings, study, favored="fast", rates=RATES, evaluators=2)
    # A commit, not a rollback: reloading `study` later would take SQLite's write lock.
    session.commit()
    return study


def start_rating(page: Any, live_server: str, base: str) -> None:
    page.goto(live_server + base)
    page.get_by_role("button", name="Start rating").click()
    page.wait_for_url(f"**{base}/rate")


def test_the_longest_words_wrap_on_every_page(chromium, live_server, long_study, settings, shots):
    from playwright.sync_api import expect  # imported here: no Playwright, the fixture skips

    base = link(settings, long_study)
    admin_pages = {
        "studies": "/admin/",
        "study": "/admin/studies/long-words",
        "study-theme": f"/admin/studies/long-words?theme={THEME}",
        "invites": "/admin/studies/long-words/invites",
        "dashboard": "/admin/studies/long-words/dashboard",
        "report": "/admin/studies/long-words/export/report.html",  # a download: opened as HTML
    }
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = chromium.new_context(viewport=viewport)
        context.set_default_timeout(10_000)
        page = context.new_page()
        sign_in(page, live_server)
        for name, path in admin_pages.items():
            if name == "report":  # opened from disk, outside the app's Content-Security-Policy
                html = page.request.get(live_server + path).text()
                page = context.new_page()
                page.set_content(html)
            else:
                page.goto(live_server + path)
            if name == "dashboard":  # the robustness panel too
                page.click("#advanced-body [data-load-advanced]")
                expect(page.locator("#advanced-body table").first).to_be_visible()
            page.screenshot(path=shots / f"long-{name}-{label}.png", full_page=True)
            assert page.evaluate(OVERFLOW) <= 0, f"{name} at {label}: scrolls sideways"
        assert NAME in page.content()  # not vacuous: the report shows the long name

        evaluator = context.new_page()
        evaluator.goto(live_server + base)
        evaluator.screenshot(path=shots / f"long-welcome-{label}.png", full_page=True)
        assert evaluator.evaluate(OVERFLOW) <= 0, f"welcome at {label}: scrolls sideways"
        evaluator.get_by_role("button", name="Start rating").click()
        evaluator.wait_for_url(f"**{base}/rate")
        # Every pair (two), so the long prompt is shown whichever comes first.
        shown = []
        for n in (1, 2):
            evaluator.wait_for_function(
                "(n) => document.getElementById('progress-n').textContent === String(n)"
                " && !document.getElementById('stage').classList.contains('is-loading')",
                arg=n,
            )
            shown.append(evaluator.locator("#prompt").inner_text())
            evaluator.screenshot(path=shots / f"long-rate-{n}-{label}.png", full_page=True)
            assert evaluator.evaluate(OVERFLOW) <= 0, f"rating page at {label}: scrolls sideways"
            for _ in RATES:
                evaluator.keyboard.press("2")
            evaluator.keyboard.press("Enter")
        evaluator.wait_for_url(f"**{base}/done")
        assert PROMPT in shown
        expect(evaluator.locator("#completion-code")).to_have_text(CODE)
        evaluator.screenshot(path=shots / f"long-done-{label}.png", full_page=True)
        assert evaluator.evaluate(OVERFLOW) <= 0, f"done page at {label}: scrolls sideways"
        context.close()


RLO = "\u202e"


def test_a_stored_direction_override_cannot_reverse_the_text_around_it(
    chromium, live_server, client, session, settings, shots
):
    """Rows written before overrides were refused: the override stays inside its own text."""
    assert log_in(client).status_code == 303
    toml = LONG_TOML.replace(NAME, "Old study").replace(DESCRIPTION, "old")
    assert upload(client, toml.encode(), b"prompt,theme\na fox,wild\n").status_code == 303
    study = session.scalar(select(Study).where(Study.slug == "long-words"))
    # As an older version stored them, with an override left open at the end.
    study.name = f"Old study {RLO}"
    study.criteria = [
        {**c, "label": c["label"][:20] + RLO} if c["key"] == "long" else c for c in study.criteria
    ]
    flag_modified(study, "criteria")
    prompt = session.scalar(select(Prompt).where(Prompt.study_id == study.id))
    prompt.theme = f"wild{RLO}"
    mark_clips_done(session, settings, study)
    study.status = StudyStatus.open
    session.commit()
    base = link(settings, study)

    context = chromium.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    sign_in(page, live_server)
    # Text after the stored text, in the same box: the slug, a criterion's question.
    checks = {
        "/admin/": ".data tbody td.lead code",
        "/admin/studies/long-words": ".criteria li:nth-child(2) .muted",
    }
    for path, selector in checks.items():
        page.goto(live_server + path)
        page.screenshot(path=shots / f"override-{path.strip('/').replace('/', '-')}.png")
        assert page.locator(selector).evaluate(READS_LEFT_TO_RIGHT), (path, selector)
    start_rating(page, live_server, base)
    question = page.locator("fieldset.criterion").nth(1).locator(".criterion-question")
    page.screenshot(path=shots / "override-rate.png")
    assert question.evaluate(READS_LEFT_TO_RIGHT)
    context.close()
