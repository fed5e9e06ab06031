"""Evaluators: a study's rating link and invites, answers on every criterion, joining over HTTP,
and evaluators run through the rating service until the study has nothing left for them."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select

from app.config import Settings
from app.rating import enrollment, matchups, service, tokens
from app.rating.models import Evaluator, Matchup, Trial
from app.studies.models import Study

MEDIA_URL = re.compile(r"/r/[^/]+/media/[A-Za-z0-9._-]+")


def link(settings: Settings, study: Study) -> str:
    """The study's evaluator path, `/r/<key>`."""
    return f"/r/{tokens.study_key(settings.resolved_secret_key(), study.id)}"


def invite_token(settings: Settings, study: Study) -> str:
    url = enrollment.new_invites(secret=settings.resolved_secret_key(), study=study, count=1)[0]
    return parse_qs(urlsplit(url).query)["invite"][0]


def all_left(study: Study) -> dict[str, str]:
    return dict.fromkeys(study.criterion_keys, "left")


def join(client, base: str, **body):  # type: ignore[no-untyped-def]
    """POST `{base}/api/join` (over HTTP, `client` a TestClient); its JSON answer."""
    response = client.post(f"{base}/api/join", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def secret(settings) -> str:  # type: ignore[no-untyped-def]
    return settings.resolved_secret_key()


def evaluator(session, settings, study, **kwargs) -> Evaluator:  # type: ignore[no-untyped-def]
    """An evaluator of the study, committed: joined with `invite` or `external_id` when given,
    else an anonymous one (open-enrollment style, whatever the study says)."""
    kwargs.setdefault("invite", None)
    if kwargs["invite"] is None and "external_id" not in kwargs:
        # Open-enrollment style anonymous evaluator, whatever the study says.
        ev = Evaluator(
            study_id=study.id, public_id=f"p{session.scalar(select(func.count(Evaluator.id)))}"
        )
        session.add(ev)
        session.flush()
        matchups.ensure_matchups(session=session, study=study)
        session.commit()
        return ev
    result = enrollment.join(session=session, secret=secret(settings), study=study, **kwargs)
    session.commit()
    return result.evaluator


def store_answer(session, study, ev, *, trial_id, votes, now=None, timing=None):  # type: ignore[no-untyped-def]
    """The answer step of `flow.submit` alone (check, then store: the same service calls), for
    tests of the assignment algorithm that pick each next trial themselves; the caller commits.
    Tests of the whole request call `flow.submit` or the API."""
    submission = service.check_submission(
        session=session,
        study=study,
        evaluator=ev,
        trial_id=trial_id,
        votes=votes,
        timing=timing,
        now=now,
    )
    return service.store_submission(
        session=session, study=study, evaluator=ev, submission=submission
    )


def answer(session, study, ev, result, *, now=None, votes=None):  # type: ignore[no-untyped-def]
    """Submit votes (default: left on every criterion) for the trial `result` shows."""
    assert result.status == "trial", result
    out = store_answer(
        session, study, ev, trial_id=result.trial.id, votes=votes or all_left(study), now=now
    )
    session.commit()
    return out


def run_session(session, study, ev) -> list[Trial]:  # type: ignore[no-untyped-def]
    """The evaluator answers every trial it is given until there is none; those trials."""
    trials = []
    while True:
        result = service.current_trial(session=session, study=study, evaluator=ev)
        session.commit()
        if result.status != "trial":
            return trials
        trials.append(result.trial)
        answer(session, study, ev, result)


def assert_counters_match_trials(session) -> None:  # type: ignore[no-untyped-def]
    """Matchup counters equal a recount of the trials they stand for."""
    reload = {"populate_existing": True}  # the service writes some columns with plain UPDATEs
    fresh = session.scalars(
        select(Trial).where(Trial.is_repeat.is_(False)).execution_options(**reload)
    ).all()
    live = [t for t in fresh if t.answered_at is not None or t.released_at is None]
    for matchup in session.scalars(select(Matchup).execution_options(**reload)):
        mine = [t for t in live if t.matchup_id == matchup.id]
        judging = [t for t in fresh if t.matchup_id == matchup.id and t.judging]
        assert matchup.live_trials == len(mine), matchup.id
        assert matchup.a_left == sum(t.a_on_left for t in mine), matchup.id
        assert matchup.open_evaluators == len(judging), matchup.id
