"""Evaluators who start while clips still render: kept until their quota (or every pair there
will be) is judged, never sent to the done page early. And the rating page's own timing: bounded
by the server's, used for the minimum viewing time and the fast flag, exported beside it.

Real databases (SQLite and PostgreSQL) and real HTTP (TestClient)."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.clips.models import Clip, ClipStatus
from app.db import utcnow
from app.rating import errors, service
from app.rating.models import Evaluator, Trial, Vote
from app.rating.schemas import ClientTiming
from tests.kit.admin import log_in
from tests.kit.db import count
from tests.kit.rating import all_left, evaluator, join, link, run_session, store_answer
from tests.kit.studies import mark_clips_done, rating_study


def set_status(session, study, status, *, prompts) -> None:  # type: ignore[no-untyped-def]
    ids = [p.id for p in study.prompts[prompts]]
    session.execute(update(Clip).where(Clip.prompt_id.in_(ids)).values(status=status))
    session.commit()


def rendering_study(session, settings, **rating):  # type: ignore[no-untyped-def]
    """6 prompts x 2 arms: the clips of the first 2 prompts done, the rest still queued."""
    study = rating_study(session, settings, prompts=6, done=False, **rating)
    mark_clips_done(session, settings, study, prompt_ids=[p.id for p in study.prompts[:2]])
    session.commit()
    set_status(session, study, ClipStatus.queued, prompts=slice(2, None))
    return study


def test_an_evaluator_waits_for_pairs_still_rendering_until_the_quota(session, settings):
    study = rendering_study(session, settings, trials_per_evaluator=4)
    ev = evaluator(session, settings, study)
    assert len(run_session(session, study, ev)) == 2  # the pairs ready so far
    waiting = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    assert waiting.status == "waiting"
    assert waiting.retry_after and waiting.retry_after > 0
    assert waiting.progress == service.Progress(answered=2, total=4)  # the quota, not 2
    session.refresh(ev)
    assert ev.completed_at is None and ev.completion_code is None
    # One clip of a third prompt finishes, then the other: the evaluator carries on.
    third = study.prompts[2]
    set_status(session, study, ClipStatus.rendering, prompts=slice(2, 3))
    assert service.current_trial(session=session, study=study, evaluator=ev).status == "waiting"
    session.commit()
    mark_clips_done(session, settings, study, prompt_ids=[third.id])
    session.commit()
    trials = run_session(session, study, ev)
    assert len(trials) == 1
    # Everything renders: the quota is reached, then (only then) done.
    mark_clips_done(session, settings, study)
    session.commit()
    assert len(run_session(session, study, ev)) == 1
    final = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    assert final.status == "done" and final.progress == service.Progress(answered=4, total=4)


def test_without_a_quota_an_evaluator_is_done_when_every_pair_there_will_be_is_judged(
    session, settings
):
    study = rendering_study(session, settings)
    ev = evaluator(session, settings, study)
    assert len(run_session(session, study, ev)) == 2
    assert service.current_trial(session=session, study=study, evaluator=ev).status == "waiting"
    session.commit()
    # Two prompts finish, two fail, the last two were never going to render (cancelled / pending):
    # the evaluator judges the two new pairs and is done at 4 of 4.
    prompts = study.prompts
    mark_clips_done(session, settings, study, prompt_ids=[prompts[2].id, prompts[3].id])
    session.commit()
    set_status(session, study, ClipStatus.failed, prompts=slice(4, 5))
    set_status(session, study, ClipStatus.cancelled, prompts=slice(5, 6))
    assert len(run_session(session, study, ev)) == 2
    final = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    assert final.status == "done" and final.progress == service.Progress(answered=4, total=4)


def test_a_plan_cached_before_clips_failed_does_not_keep_an_evaluator_waiting(session, settings):
    study = rendering_study(session, settings, trials_per_evaluator=3)
    ev = evaluator(session, settings, study)
    assert len(run_session(session, study, ev)) == 2
    assert service.current_trial(session=session, study=study, evaluator=ev).status == "waiting"
    session.commit()
    # Every clip still to come fails (the cached plan still counts them).
    set_status(session, study, ClipStatus.failed, prompts=slice(2, None))
    final = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    assert final.status == "done"
    assert final.progress == service.Progress(answered=2, total=2)


def test_the_api_says_waiting_with_a_retry_hint_and_the_pages_keep_the_evaluator(
    client, session, settings
):
    study = rendering_study(session, settings, trials_per_evaluator=5, open_enrollment=True)
    base = link(settings, study)
    joined = join(client, base)
    assert joined["progress"] == {"answered": 0, "total": 5}
    welcome = client.get(base).text
    assert "answered 0 of 5 pairs" in welcome  # the quota, not the 2 pairs ready now
    result = client.get(f"{base}/api/next").json()
    while result["status"] == "trial":
        url = f"{base}/api/trials/{result['trial']['id']}/votes"
        result = client.post(url, json={"votes": all_left(study)}).json()["next"]
    assert result["status"] == "waiting", result
    assert result["retry_after"] > 0 and result["completion_code"] is None
    assert result["progress"] == {"answered": 2, "total": 5}
    again = client.get(f"{base}/api/next").json()
    assert again["status"] == "waiting"
    # Reopening the link: progress, not the intro, and no done page.
    page = client.get(base)
    assert page.status_code == 200
    assert "You have answered 2 of 5 pairs" in page.text
    assert "Read the instructions again" in page.text
    assert client.get(f"{base}/rate", follow_redirects=False).status_code == 200
    assert client.get(f"{base}/done", follow_redirects=False).status_code == 303
    assert count(session, Evaluator) == 1
    session.commit()
    assert session.scalar(select(Evaluator.completed_at)) is None


def test_the_admin_links_page_says_pairs_per_evaluator_from_the_quota(client, session, settings):
    study = rendering_study(session, settings, trials_per_evaluator=5)
    log_in(client)
    page = client.get(f"/admin/studies/{study.slug}/invites").text
    assert "<dt>Pairs per evaluator</dt><dd>5</dd>" in page


# --- client timing ----------------------------------------------------------------------------


def shown_trial(session, settings, **rating):  # type: ignore[no-untyped-def]
    study = rating_study(session, settings, prompts=3, **rating)
    ev = evaluator(session, settings, study)
    result = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    return study, ev, result, result.trial.shown_at


def submit(session, study, ev, result, *, at, timing):  # type: ignore[no-untyped-def]
    return store_answer(
        session, study, ev, trial_id=result.trial.id, votes=all_left(study), now=at, timing=timing
    )


def test_the_fast_flag_uses_the_pages_timing_not_the_servers(session, settings):
    study, ev, result, shown = shown_trial(session, settings, fast_trial_seconds=1)
    # The server saw 0.7 s (queueing included); the page saw the answer 0.2 s after the reveal.
    timing = ClientTiming(load_seconds=0.3, view_seconds=0.2)
    out = submit(session, study, ev, result, at=shown + timedelta(seconds=0.7), timing=timing)
    session.commit()
    assert out.trial.flagged and "0.2 s" in out.trial.flag_reason
    stored = session.get(Trial, result.trial.id)
    session.refresh(stored)
    assert (stored.client_load_seconds, stored.client_view_seconds) == (0.3, 0.2)


def test_the_minimum_viewing_time_uses_the_pages_timing(session, settings):
    study, ev, result, shown = shown_trial(session, settings, min_view_seconds=2)
    late = shown + timedelta(seconds=3)  # by the server's clock, long enough
    with pytest.raises(errors.TooEarlyError):
        submit(
            session,
            study,
            ev,
            result,
            at=late,
            timing=ClientTiming(load_seconds=1.5, view_seconds=1.0),
        )
    session.rollback()
    out = submit(
        session, study, ev, result, at=late, timing=ClientTiming(load_seconds=0.5, view_seconds=2.4)
    )
    session.commit()
    assert out.created and not out.trial.flagged


@pytest.mark.parametrize(("load", "view"), [(0.0, 5.0), (3.0, 2.5), (4.9, 0.2)])
def test_impossible_timing_is_refused_and_nothing_is_stored(session, settings, load, view):
    study, ev, result, shown = shown_trial(session, settings)
    with pytest.raises(errors.TimingError, match=r"longer than the 3\.000 s"):
        submit(
            session,
            study,
            ev,
            result,
            at=shown + timedelta(seconds=3),
            timing=ClientTiming(load_seconds=load, view_seconds=view),
        )
    session.rollback()
    assert session.scalar(select(Trial.answered_at).where(Trial.id == result.trial.id)) is None
    assert not session.scalars(select(Vote)).all()


def test_without_timing_the_servers_times_are_used(session, settings):
    study, ev, result, shown = shown_trial(session, settings, fast_trial_seconds=1)
    out = submit(session, study, ev, result, at=shown + timedelta(seconds=0.7), timing=None)
    session.commit()
    assert out.trial.flagged and "0.7 s" in out.trial.flag_reason
    stored = session.get(Trial, result.trial.id)
    session.refresh(stored)
    assert stored.client_view_seconds is None


def test_timing_over_http_is_validated_and_exported_beside_the_servers(client, session, settings):
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    base = link(settings, study)
    join(client, base)
    trial = client.get(f"{base}/api/next").json()["trial"]
    url = f"{base}/api/trials/{trial['id']}/votes"
    for bad in (
        {"load_seconds": -1, "view_seconds": 1},
        {"view_seconds": 1},
        {"load_seconds": "x"},
    ):
        response = client.post(url, json={"votes": all_left(study), "timing": bad})
        assert response.status_code == 422, response.text
    impossible = {"load_seconds": 0, "view_seconds": 3600}
    response = client.post(url, json={"votes": all_left(study), "timing": impossible})
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "invalid_timing"
    assert count(session, Vote) == 0
    # Back-date the trial's shown_at so that 1.25 s of viewing is possible.
    session.execute(
        update(Trial)
        .where(Trial.id == trial["id"])
        .values(shown_at=utcnow() - timedelta(seconds=5))
    )
    session.commit()
    timing = {"load_seconds": 0.125, "view_seconds": 1.25}
    response = client.post(url, json={"votes": all_left(study), "timing": timing})
    assert response.status_code == 200, response.text
    log_in(client)
    exported = client.get(f"/admin/studies/{study.slug}/export/votes.csv")
    assert exported.status_code == 200, exported.text
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert rows and all(
        r["client_load_ms"] == "125" and r["client_view_ms"] == "1250" for r in rows
    )
    assert all(int(r["response_ms"]) >= 5000 for r in rows)  # the server's time, kept beside


def test_a_waiting_evaluator_asks_again_without_the_write_lock(client, session, settings, engine):
    """Waiting pages poll: their GET next is answered from a read transaction, so it neither
    waits for nor takes the write lock (SQLite) or the evaluator's row lock (PostgreSQL)."""
    study = rendering_study(session, settings, trials_per_evaluator=5, open_enrollment=True)
    base = link(settings, study)
    join(client, base)
    result = client.get(f"{base}/api/next").json()
    while result["status"] == "trial":
        url = f"{base}/api/trials/{result['trial']['id']}/votes"
        result = client.post(url, json={"votes": all_left(study)}).json()["next"]
    assert result["status"] == "waiting"
    answers: list[dict] = []
    with engine.connect() as blocker:
        # Another writer holds the lock the write path would need: this engine begins SQLite
        # transactions IMMEDIATE (the write lock); on PostgreSQL it locks the evaluator's row.
        blocker.execute(select(Evaluator.id).with_for_update())
        poll = threading.Thread(
            target=lambda: answers.append(client.get(f"{base}/api/next").json()), daemon=True
        )
        poll.start()
        poll.join(timeout=10)
        answered_while_locked = list(answers)
        blocker.rollback()
    poll.join(timeout=60)
    assert answered_while_locked, "the poll waited for the lock"
    assert answered_while_locked[0]["status"] == "waiting"
