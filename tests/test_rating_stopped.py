"""A study that has stopped (its plan decided, or its vote budget spent) assigns no new pair:
an evaluator with a pair on screen finishes it, the pair assigned ahead is never shown, and
everyone reaches the done page with their completion code; through the service, the use cases
and the JSON API, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from app.db import utcnow
from app.rating import flow, service
from app.rating.models import Trial
from tests.kit.rating import all_left, answer, evaluator, invite_token, join, link
from tests.kit.studies import rating_study


def stop(session, study) -> None:  # type: ignore[no-untyped-def]
    study.stopped_at, study.stop_reason = utcnow(), "every primary hypothesis decided"
    session.commit()


def test_a_stopped_study_lets_the_pair_on_screen_be_finished_then_says_done(session, settings):
    study = rating_study(session, settings, prompts=6, trials_per_evaluator=4)
    ev = evaluator(session, settings, study)
    shown = flow.next_trial(session=session, study=study, evaluator=ev)
    assert shown.status == "trial" and shown.after is not None  # one assigned ahead
    stop(session, study)

    again = service.current_trial(session=session, study=study, evaluator=ev)
    assert again.status == "trial" and again.trial.id == shown.trial.id  # finished, not lost
    session.commit()
    answered = flow.submit(
        session=session,
        study=study,
        evaluator=ev,
        trial_id=shown.trial.id,
        votes=all_left(study),
    )
    assert answered.next.status == "done"
    assert answered.next.completion_code == ev.completion_code is not None
    assert "stopped" in (answered.next.message or "")
    ahead = session.get(Trial, shown.after.id)
    assert ahead.shown_at is None and ahead.answered_at is None  # never shown
    assert session.scalar(select(func.count(Trial.id))) == 2  # nothing assigned after the stop


def test_after_the_stop_newcomers_and_returning_evaluators_are_done(session, settings):
    study = rating_study(session, settings, prompts=6, trials_per_evaluator=4)
    veteran = evaluator(session, settings, study)
    answer(
        session,
        study,
        veteran,
        service.current_trial(session=session, study=study, evaluator=veteran),
    )
    session.commit()
    stop(session, study)
    newcomer = evaluator(session, settings, study)
    for ev in (veteran, newcomer):
        result = flow.next_trial(session=session, study=study, evaluator=ev)
        assert result.status == "done" and result.completion_code, result
    assert session.scalar(select(func.count(Trial.id))) == 1  # the veteran's answered one only


def test_the_api_join_after_the_stop_answers_done_with_a_completion_code(client, session, settings):
    study = rating_study(session, settings, prompts=4)
    stop(session, study)
    base = link(settings, study)
    joined = join(client, base, invite=invite_token(settings, study))
    assert joined["next"]["status"] == "done"
    assert joined["next"]["completion_code"]
