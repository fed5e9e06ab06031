"""Stop when decided, end to end: a study whose plan says `stop = "when_decided"` is stopped by
the check once every primary hypothesis has a verdict (or its vote budget is spent), the admin
sees why, and evaluators are then done; a study with no true preference is not stopped. Votes
cast through the rating service with a known truth; SQLite and PostgreSQL."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from app.dashboard.service import DashboardCache
from app.dashboard.stopping import check_studies
from app.db import session_factory
from app.main import create_app
from app.rating import flow
from app.studies import service as studies_service
from app.studies.studyfile import AnalysisSpec
from tests.kit.admin import log_in
from tests.kit.config import configured
from tests.kit.rating import evaluator
from tests.kit.studies import rating_study
from tests.kit.votes import cast_votes


def plan(session, study, **spec) -> None:  # type: ignore[no-untyped-def]
    studies_service.set_analysis(
        session=session, study=study, spec=AnalysisSpec(**spec), reason="the test's plan"
    )
    session.commit()


def check(engine):  # type: ignore[no-untyped-def]
    return check_studies(
        read=session_factory(engine, read_only=True),
        write=session_factory(engine),
        cache=DashboardCache(),
    )


def test_a_clear_preference_stops_the_study_and_says_why(engine, session, settings, client):
    study = rating_study(
        session, settings, prompts=12, trials_per_evaluator=8, open_enrollment=True
    )
    plan(session, study, stop="when_decided", primary=["overall_quality"])
    favored = study.arms[0].name
    rates = dict.fromkeys(study.criterion_keys, 0.95)
    cast_votes(session, settings, study, favored=favored, rates=rates, evaluators=6, tie_rate=0)
    assert check(engine) == []  # six evaluators are not enough yet
    cast_votes(
        session, settings, study, favored=favored, rates=rates, evaluators=34, seed=1, tie_rate=0
    )
    stopped = check(engine)
    assert [slug for slug, _ in stopped] == [study.slug]
    assert "Every primary hypothesis is decided: overall_quality" in stopped[0][1]
    session.refresh(study)
    assert study.stopped_at is not None and study.stop_reason == stopped[0][1]
    assert check(engine) == []  # stopped once

    newcomer = evaluator(session, settings, study)
    result = flow.next_trial(session=session, study=study, evaluator=newcomer)
    assert result.status == "done" and result.completion_code
    log_in(client)
    page = client.get(f"/admin/studies/{study.slug}").text
    assert "Stopped" in page and "Every primary hypothesis is decided" in page


def test_the_vote_budget_stops_the_study(engine, session, settings):
    study = rating_study(session, settings, prompts=8, trials_per_evaluator=4, open_enrollment=True)
    plan(session, study, stop="when_decided", budget=30)
    rates = dict.fromkeys(study.criterion_keys, 0.5)
    cast_votes(session, settings, study, favored=study.arms[0].name, rates=rates, evaluators=2)
    assert check(engine) == []  # 2 x 4 trials x 3 criteria = 24 votes
    cast_votes(
        session, settings, study, favored=study.arms[0].name, rates=rates, evaluators=1, seed=1
    )
    stopped = check(engine)
    assert len(stopped) == 1 and stopped[0][1] == "The vote budget is spent: 36 of 30 votes."


def test_no_preference_and_a_plan_that_never_stops_leave_the_study_open(engine, session, settings):
    undecided = rating_study(session, settings, slug="undecided", prompts=12, open_enrollment=True)
    plan(session, undecided, stop="when_decided")
    never = rating_study(session, settings, slug="never", prompts=12, open_enrollment=True)
    rates = dict.fromkeys(undecided.criterion_keys, 0.95)
    for study in (undecided, never):
        cast_votes(
            session,
            settings,
            study,
            favored=study.arms[0].name,
            rates=rates if study is never else dict.fromkeys(study.criterion_keys, 0.5),
            evaluators=20,
        )
    assert check(engine) == []


def test_each_web_process_checks_by_itself(session, settings):
    """The app's own check (VIDARENA_STOP_CHECK_SECONDS) stops a decided study while it runs."""
    study = rating_study(session, settings, prompts=8, trials_per_evaluator=4, open_enrollment=True)
    plan(session, study, stop="when_decided", budget=10)
    rates = dict.fromkeys(study.criterion_keys, 0.5)
    cast_votes(session, settings, study, favored=study.arms[0].name, rates=rates, evaluators=1)
    with TestClient(create_app(configured(settings, stop_check_seconds=0.1))):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            session.refresh(study)
            session.commit()
            if study.stopped_at is not None:
                break
            time.sleep(0.1)
    assert study.stop_reason == "The vote budget is spent: 12 of 10 votes."
