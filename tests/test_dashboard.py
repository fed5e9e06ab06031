"""The live dashboard on SQLite and PostgreSQL: votes with known preference rates, cast through
the real rating flow, come back with intervals that cover the truth; every filter agrees with a
count made from the votes export; the incremental tally equals a fresh build; the event stream
pushes a new summary after a vote; every route refuses anonymous visitors."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import select, text

from app.dashboard import service, tally
from app.dashboard.router import sse_event
from app.dashboard.schemas import Filters
from app.exports import service as exports_service
from app.rating.models import Trial, Vote
from app.studies.models import Study
from tests.kit.admin import log_in
from tests.kit.studies import rating_study
from tests.kit.votes import cast_votes, flagged_evaluator_ids

FAVORED = "quokka-arm"  # the second arm; results are read as its win rate
RATES = {"video_text_relevance": 0.75, "motion_naturalness": 0.5, "overall_quality": 0.3}
FILTER_NAMES = ("exclude_flagged_trials", "exclude_flagged_evaluators", "exclude_ties")


@pytest.fixture
def voted(session, settings):  # type: ignore[no-untyped-def]
    """12 prompts x 2 arms; 16 evaluators rate all 12 pairs plus one repeat; 3 of them answer
    too fast (their trials are flagged)."""
    study = rating_study(
        session, settings, slug="results", prompts=12, open_enrollment=True,
        repeat_trials=1, fast_trial_seconds=1.0,
    )  # fmt: skip
    cast = cast_votes(
        session, settings, study, favored=FAVORED, rates=RATES, evaluators=16, careless=3
    )
    session.rollback()
    return study, cast


def live(session, study: Study, **filters):  # type: ignore[no-untyped-def]
    d = service.live(
        session=session, study=study, filters=Filters(arm=FAVORED, **filters),
        cache=service.DashboardCache(),
    )  # fmt: skip
    session.rollback()
    return d


def expected_counts(session, study: Study, **filters: bool) -> dict[str, Counter[str]]:
    """Per criterion win/tie/loss of FAVORED counted from votes.csv rows (another code path)."""
    columns = exports_service.VOTE_COLUMNS
    flagged_evaluators = set(flagged_evaluator_ids(session, study))
    counts: dict[str, Counter[str]] = {c: Counter() for c in study.criterion_keys}
    for values in exports_service.vote_rows(session=session, study=study):
        row = dict(zip(columns, values, strict=True))
        if row["is_repeat"] == "true" or (
            filters.get("exclude_flagged_trials") and row["flagged"] == "true"
        ):
            continue
        if filters.get("exclude_flagged_evaluators") and row["evaluator_id"] in flagged_evaluators:
            continue
        if filters.get("exclude_ties") and row["choice"] == "tie":
            continue
        winner = row["winner"]
        counts[row["criterion"]][
            "tie" if winner == "tie" else "win" if winner == FAVORED else "loss"
        ] += 1
    session.rollback()
    return counts


def observed(d) -> dict[str, tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    return {r.criterion: (r.wins, r.ties, r.losses) for r in d.summary.overall}


# --- the numbers ----------------------------------------------------------------------------------


def test_known_preference_rates_come_back_with_intervals_that_cover_them(voted, session, client):
    study, cast = voted
    d = live(session, study)
    assert d.focus == FAVORED
    assert d.summary.n_votes == cast.first_votes == 16 * 12 * 3
    for r in d.summary.overall:
        outcome = cast.outcomes[r.criterion]
        assert (r.wins, r.ties, r.losses) == (outcome["win"], outcome["tie"], outcome["loss"])
        assert r.ci_low < RATES[r.criterion] < r.ci_high, r
    by_criterion = {r.criterion: r for r in d.summary.overall}
    assert by_criterion["video_text_relevance"].p_holm < 0.05  # 0.75 is detected
    assert by_criterion["overall_quality"].p_holm < 0.05  # so is 0.30
    assert by_criterion["motion_naturalness"].p_holm > 0.05  # 0.50 is not
    assert d.progress.joined == 16 and d.progress.completed == 16
    assert d.progress.answered_trials == 16 * 13 and d.progress.flagged == 3
    assert sum(b.votes for b in d.timeline.buckets) == cast.votes
    # ... and the same numbers on the page, with the peeking warning and the power figures
    assert log_in(client).status_code == 303
    page = client.get(f"/admin/studies/{study.slug}/dashboard", params={"arm": FAVORED})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    for criterion, outcome in cast.outcomes.items():
        assert f"{outcome['win']} / {outcome['tie']} / {outcome['loss']}" in html, criterion
    assert "Peeking inflates false positives" in html
    assert 'data-events-url="/admin/studies/results/dashboard/events?arm=quokka-arm"' in html
    assert "more</td>" in html or "reached</td>" in html  # power per criterion
    assert "/export/votes.csv" in html and "/export/summary.csv?arm=quokka-arm" in html
    fragment = client.get(f"/admin/studies/{study.slug}/dashboard/live")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    advanced = client.get(f"/admin/studies/{study.slug}/dashboard/advanced")
    assert advanced.status_code == 200 and "Krippendorff" in advanced.text
    assert "bootstrap" in advanced.text


def test_every_filter_agrees_with_a_count_from_the_votes_export(voted, session):
    study, _ = voted
    assert flagged_evaluator_ids(session, study)  # the filter has something to do
    for combo in itertools.product([False, True], repeat=3):
        filters = dict(zip(FILTER_NAMES, combo, strict=True))
        expected = expected_counts(session, study, **filters)
        d = live(session, study, **filters)
        assert observed(d) == {c: (n["win"], n["tie"], n["loss"]) for c, n in expected.items()}, (
            filters
        )


def test_the_tally_advances_to_what_a_fresh_build_counts(session, settings):
    study = rating_study(
        session, settings, slug="incremental", prompts=6, open_enrollment=True,
        repeat_trials=1, fast_trial_seconds=1.0,
    )  # fmt: skip
    cache = service.DashboardCache()
    empty = cache.tallies.snapshot(session=session, study=study)
    assert empty.counts.n_votes == 0
    session.rollback()
    cast = cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=3)
    session.rollback()
    first = cache.tallies.snapshot(session=session, study=study)
    # Careless evaluators join later: the flagged set changes after their votes are counted.
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=4, careless=2,
               seed=1, cast=cast, max_trials=5)  # fmt: skip
    session.rollback()
    advanced = cache.tallies._tallies[(study.id, study.created_at)]
    assert advanced.advance(session=session) is True
    fresh = tally.Tally.build(session=session, study=study)
    assert advanced.version > first.version
    assert advanced.flagged_evaluators == fresh.flagged_evaluators
    assert set(cast.evaluators[3:5]) <= fresh.flagged_evaluators  # the careless two
    for combo in itertools.product([False, True], repeat=3):
        filters = dict(zip(FILTER_NAMES, combo, strict=True))
        assert sorted(advanced.grouped_rows(**filters)) == sorted(fresh.grouped_rows(**filters))
    assert advanced.trials == fresh.trials and advanced.minutes == fresh.minutes
    assert advanced.advance(session=session) is False  # nothing new: nothing counted twice


def test_a_vote_committed_below_the_newest_id_is_counted_once(session, settings, monkeypatch):
    """PostgreSQL's case (ids from a sequence commit out of order), forced on both databases:
    ids above `settled` are read again until they settle, each counted once."""
    for name in ("sqlite", "postgresql"):
        monkeypatch.setitem(tally.SETTLE_SECONDS, name, 60.0)
        monkeypatch.setitem(tally.COLD_WINDOW_IDS, name, 10_000)
    study = rating_study(session, settings, slug="late", prompts=4, open_enrollment=True)
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=2)
    late_trial = session.scalar(select(Trial).order_by(Trial.id).limit(1))
    held = [(v.id, v.trial_id, v.criterion, v.choice.value) for v in late_trial.votes]
    session.execute(Vote.__table__.delete().where(Vote.trial_id == late_trial.id))
    session.commit()
    built = tally.Tally.build(session=session, study=study)
    session.rollback()
    assert built.settled == 0 and built.window  # everything is still settling
    names = ("id", "trial_id", "criterion", "choice")
    session.execute(Vote.__table__.insert(), [dict(zip(names, v, strict=True)) for v in held])
    session.commit()
    assert built.advance(session=session) is True  # the late votes
    assert built.advance(session=session) is False  # and not again
    fresh = tally.Tally.build(session=session, study=study)
    assert sorted(built.grouped_rows()) == sorted(fresh.grouped_rows())
    assert sum(built.cube.values()) == 2 * 4 * len(study.criterion_keys)


# --- the pages and the stream -------------------------------------------------------------------


def test_an_empty_study_has_a_dashboard(client, session, settings):
    study = rating_study(session, settings, slug="empty", prompts=2)
    log_in(client)
    page = client.get(f"/admin/studies/{study.slug}/dashboard")
    assert page.status_code == 200 and "No votes yet" in page.text


def test_the_study_page_links_to_its_dashboard(client, session, settings):
    study = rating_study(session, settings, slug="linked", prompts=2)
    log_in(client)
    assert (
        f"/admin/studies/{study.slug}/dashboard" in client.get(f"/admin/studies/{study.slug}").text
    )


ROUTES = (
    "dashboard", "dashboard/live", "dashboard/advanced", "dashboard/events", "dashboard/blinding",
    "export/votes.csv", "export/clips.csv", "export/summary.csv", "export/summary.json",
    "export/report.html",
)  # fmt: skip


def test_every_dashboard_and_export_route_refuses_anonymous_visitors(client, session, settings):
    study = rating_study(session, settings, slug="private", prompts=2)
    for route in ROUTES:
        path = f"/admin/studies/{study.slug}/{route}"
        page = client.get(path, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/admin/login"), path
        api = client.get(path, headers={"Accept": "application/json"})
        assert api.status_code == 401, path
    from app.dashboard.router import router as dashboard_router
    from app.exports.router import router as exports_router

    paths = {r.path for r in (*dashboard_router.routes, *exports_router.routes)}
    assert paths == {f"/admin/studies/{{slug}}/{route}" for route in ROUTES}


def test_sse_events_carry_every_line():
    assert sse_event("summary", "a\nb\r\nc") == "event: summary\ndata: a\ndata: b\ndata: c\n\n"


def _next_summary(lines) -> str:  # type: ignore[no-untyped-def]
    event, data = None, []
    for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line[6:])
        elif line == "" and event == "summary":
            return "\n".join(data)
        elif line == "":
            event, data = None, []
    raise AssertionError("stream ended")


def test_the_event_stream_pushes_a_new_summary_after_a_vote(live_server, session, settings):
    study = rating_study(session, settings, slug="stream", prompts=4, open_enrollment=True)
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=1, max_trials=1)
    session.rollback()
    votes = re.compile(r'data-stat="votes">([\d,]+)<')
    with httpx.Client(base_url=live_server, timeout=10) as http:
        assert log_in(http).status_code == 303
        url = f"/admin/studies/{study.slug}/dashboard/events"
        with http.stream("GET", url) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert votes.search(_next_summary(lines))[1] == "3"
            started = time.monotonic()
            cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=1,
                       seed=2, max_trials=1)  # fmt: skip
            session.rollback()
            assert votes.search(_next_summary(lines))[1] == "6"
            assert time.monotonic() - started < 2.5


def test_change_token_moves_with_votes_evaluators_and_clips(session, settings):
    study = rating_study(session, settings, slug="token", prompts=2, open_enrollment=True)
    before = service.change_token(session=session, study=study)
    session.rollback()
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=1, max_trials=1)
    after = service.change_token(session=session, study=study)
    assert before != after and after[0] > before[0] and after[1] == before[1] + 1
    session.execute(text("SELECT 1"))


def test_three_arms_get_a_section_per_pair_and_bradley_terry(client, session, settings):
    study = rating_study(session, settings, slug="three", prompts=3, arms=3, open_enrollment=True)
    cast_votes(session, settings, study, favored=FAVORED, rates=RATES, evaluators=3)
    session.rollback()
    d = live(session, study)
    assert {(r.arm, r.opponent) for r in d.summary.overall} == {
        ("zebra-arm", "narwhal-arm"), (FAVORED, "zebra-arm"), (FAVORED, "narwhal-arm"),
    }  # fmt: skip
    assert len(d.strengths) == 3
    log_in(client)
    html = client.get(f"/admin/studies/{study.slug}/dashboard", params={"arm": FAVORED}).text
    assert html.count('class="panel" id="pair-') == 3
    assert "Bradley\N{EN DASH}Terry strengths" in html
    # focus pairs first (in the per-pair sections; the verdicts panel above lists them too)
    sections = html[html.index('id="pair-1"') :]
    assert sections.index("quokka-arm <span") < sections.index("zebra-arm <span")
