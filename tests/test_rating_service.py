"""Rating service on real databases (SQLite and PostgreSQL): matchups, assignment, votes, QC."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from itertools import pairwise

import pytest
from sqlalchemy import func, select

from app.clips.models import Clip, ClipStatus
from app.db import utcnow
from app.rating import enrollment, errors, flow, service
from app.rating import matchups as rating_matchups
from app.rating.models import Evaluator, Matchup, Trial, Vote
from app.studies.models import Prompt, StudyStatus
from tests.kit.rating import (
    all_left,
    answer,
    assert_counters_match_trials,
    evaluator,
    run_session,
    secret,
)
from tests.kit.studies import mark_clips_done, rating_study

# --- matchups -----------------------------------------------------------------------------


def test_ensure_matchups_pairs_done_clips_once(session, settings):
    study = rating_study(session, settings, prompts=4, arms=3, done=False)
    assert rating_matchups.ensure_matchups(session=session, study=study) == 0
    first_two = [p.id for p in study.prompts[:2]]
    mark_clips_done(session, settings, study, prompt_ids=first_two)
    assert (
        rating_matchups.ensure_matchups(session=session, study=study) == 6
    )  # 2 prompts x 3 arm pairs
    assert rating_matchups.ensure_matchups(session=session, study=study) == 0  # idempotent
    session.commit()
    # A worker finishing the clips of a third prompt, one at a time.
    third = study.prompts[2]
    clips = session.scalars(select(Clip).where(Clip.prompt_id == third.id).order_by(Clip.id)).all()
    mark_clips_done(session, settings, study, prompt_ids=[third.id])
    clips[2].status = ClipStatus.rendering
    clips[2].storage_key = clips[2].sha256 = None
    session.flush()
    assert rating_matchups.ensure_matchups_for_prompt(session=session, clip_id=clips[1].id) == 1
    mark_clips_done(session, settings, study, prompt_ids=[third.id])
    assert rating_matchups.ensure_matchups_for_prompt(session=session, clip_id=clips[2].id) == 2
    session.commit()
    matchups = session.scalars(select(Matchup)).all()
    assert len(matchups) == 9
    assert all(m.arm_a_id < m.arm_b_id for m in matchups)
    assert Counter(m.prompt_id for m in matchups) == {first_two[0]: 3, first_two[1]: 3, third.id: 3}


def test_matchup_across_prompts_is_impossible(session, settings):
    study = rating_study(session, settings, prompts=2)
    clip_1, _ = session.scalars(
        select(Clip).where(Clip.prompt_id == study.prompts[0].id).order_by(Clip.arm_id)
    ).all()
    other = session.scalars(
        select(Clip).where(Clip.prompt_id == study.prompts[1].id).order_by(Clip.arm_id)
    ).all()
    session.add(
        Matchup(
            study_id=study.id,
            prompt_id=study.prompts[0].id,
            clip_a_id=clip_1.id,
            clip_b_id=other[1].id,
            arm_a_id=clip_1.arm_id,
            arm_b_id=other[1].arm_id,
        )
    )
    with pytest.raises(Exception, match=r"(?i)foreign key|violates"):
        session.flush()
    session.rollback()


# --- assignment ---------------------------------------------------------------------------


def test_a_session_covers_every_matchup_once_and_then_completes(session, settings):
    study = rating_study(session, settings, prompts=5, completion_code="THANKS-42")
    ev = evaluator(session, settings, study)
    trials = run_session(session, study, ev)
    assert len(trials) == 5
    assert len({t.matchup_id for t in trials}) == 5
    assert [t.position for t in trials] == [1, 2, 3, 4, 5]
    final = service.current_trial(session=session, study=study, evaluator=ev)
    assert final.status == "done"
    assert final.completion_code == "THANKS-42"
    assert final.progress == service.Progress(answered=5, total=5)
    assert session.scalar(select(func.count(Vote.id))) == 5 * len(study.criterion_keys)


def test_quota_and_generated_completion_code(session, settings):
    study = rating_study(session, settings, prompts=6, trials_per_evaluator=2)
    ev = evaluator(session, settings, study)
    assert len(run_session(session, study, ev)) == 2
    session.refresh(ev)
    assert ev.completed_at is not None
    assert ev.completion_code and len(ev.completion_code) == 10


def test_no_ready_pairs_is_unavailable_not_done(session, settings):
    study = rating_study(session, settings, prompts=2, done=False)
    ev = evaluator(session, settings, study)
    result = service.current_trial(session=session, study=study, evaluator=ev)
    assert result.status == "unavailable"
    session.commit()
    mark_clips_done(session, settings, study)
    rating_matchups.ensure_matchups(session=session, study=study)
    session.commit()
    assert service.current_trial(session=session, study=study, evaluator=ev).status == "trial"


def test_reload_returns_the_same_open_trial(session, settings):
    study = rating_study(session, settings, prompts=3)
    ev = evaluator(session, settings, study)
    first = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    again = service.current_trial(session=session, study=study, evaluator=ev)
    assert again.trial.id == first.trial.id
    assert again.trial.shown_at == first.trial.shown_at
    assert session.scalar(select(func.count(Trial.id))) == 1


def test_coverage_stays_balanced_and_sides_counterbalanced(session, settings):
    study = rating_study(session, settings, prompts=4, arms=3, trials_per_evaluator=4)
    evaluators = [evaluator(session, settings, study) for _ in range(15)]
    # Interleave evaluators, as concurrent raters would.
    for _round in range(4):
        for ev in evaluators:
            answer(
                session,
                study,
                ev,
                service.current_trial(session=session, study=study, evaluator=ev),
            )
    per_matchup = Counter(
        session.scalars(select(Trial.matchup_id).where(Trial.answered_at.is_not(None)))
    )
    matchups = session.scalars(select(Matchup.id)).all()
    counts = [per_matchup.get(m, 0) for m in matchups]
    assert sum(counts) == 60 and len(matchups) == 12
    assert max(counts) - min(counts) <= 1
    for matchup_id in matchups:
        sides = Counter(
            session.scalars(select(Trial.a_on_left).where(Trial.matchup_id == matchup_id))
        )
        assert abs(sides[True] - sides[False]) <= 1, sides


@pytest.fixture
def release_at_once(monkeypatch):  # type: ignore[no-untyped-def]
    """Release expired holds at every assignment (not at most every RELEASE_EVERY)."""
    monkeypatch.setattr(service, "RELEASE_EVERY", timedelta(0))


def test_counters_match_the_trials_through_releases_late_answers_and_completion(
    session, settings, release_at_once
):
    study = rating_study(
        session, settings, prompts=5, arms=3, trials_per_evaluator=6, repeat_trials=1
    )
    evaluators = [evaluator(session, settings, study) for _ in range(6)]
    for _round in range(2):  # the repeat is due after 3 fresh trials
        for ev in evaluators:
            current = service.current_trial(session=session, study=study, evaluator=ev)
            answer(session, study, ev, current)
    assert_counters_match_trials(session)
    # Only evaluators with fresh trials to come judge: none has reached 6 yet.
    assert session.scalar(select(func.sum(Matchup.open_evaluators))) == 6 * 2
    idle = evaluators[0]
    held = service.current_trial(session=session, study=study, evaluator=idle).trial
    assert not held.is_repeat
    session.commit()
    held.assigned_at = utcnow() - service.ASSIGNMENT_HOLD - timedelta(minutes=1)
    session.commit()
    late = evaluator(session, settings, study)
    answer(
        session, study, late, service.current_trial(session=session, study=study, evaluator=late)
    )
    session.refresh(held)
    assert held.released_at is not None and held.answered_at is None
    assert_counters_match_trials(session)
    # The idle evaluator comes back and answers the released trial: it counts again.
    back = service.current_trial(session=session, study=study, evaluator=idle)
    assert back.trial.id == held.id
    answer(session, study, idle, back)
    assert_counters_match_trials(session)
    for ev in [*evaluators, late]:
        run_session(session, study, ev)
    assert_counters_match_trials(session)
    assert session.scalar(select(func.sum(Matchup.open_evaluators))) == 0
    assert session.scalar(select(func.count()).where(Evaluator.completed_at.is_(None))) == 0


def test_same_prompt_is_not_shown_twice_in_a_row(session, settings):
    study = rating_study(session, settings, prompts=3, arms=3)  # 9 matchups, 3 per prompt
    for _ in range(3):
        ev = evaluator(session, settings, study)
        trials = run_session(session, study, ev)
        assert len(trials) == 9
        prompts = [session.get(Matchup, t.matchup_id).prompt_id for t in trials]
        # 3 prompts x 3 pairs can always be interleaved until the very end.
        repeats = sum(a == b for a, b in pairwise(prompts))
        assert repeats <= 1, prompts


def test_repeats_swap_sides_and_inconsistency_is_flagged(session, settings):
    study = rating_study(session, settings, prompts=6, trials_per_evaluator=4, repeat_trials=2)
    ev = evaluator(session, settings, study)
    trials = run_session(session, study, ev)
    assert len(trials) == 6
    repeats = [t for t in trials if t.is_repeat]
    assert len(repeats) == 2
    assert trials[-1].is_repeat is False or trials[0].is_repeat is False
    by_matchup = {t.matchup_id: t for t in trials if not t.is_repeat}
    for repeat in repeats:
        original = by_matchup[repeat.matchup_id]
        assert repeat.a_on_left is not original.a_on_left
        assert repeat.position > original.position
        # All "left" both times means opposite arms: inconsistent, so flagged.
        session.refresh(repeat)
        assert repeat.flagged and "inconsistent repeat" in repeat.flag_reason


def test_consistent_repeat_is_not_flagged(session, settings):
    study = rating_study(session, settings, prompts=1, repeat_trials=1)
    ev = evaluator(session, settings, study)
    first = service.current_trial(session=session, study=study, evaluator=ev)
    answer(session, study, ev, first)
    second = service.current_trial(session=session, study=study, evaluator=ev)
    assert second.trial.is_repeat
    answer(session, study, ev, second, votes=dict.fromkeys(study.criterion_keys, "right"))
    assert not second.trial.flagged


# --- prefetch -----------------------------------------------------------------------------


def test_prefetch_assigns_one_trial_ahead_once(session, settings):
    study = rating_study(session, settings, prompts=4)
    ev = evaluator(session, settings, study)
    current = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    ahead = service.trial_after(
        session=session, study=study, evaluator=ev, trial_id=current.trial.id
    )
    session.commit()
    again = service.trial_after(
        session=session, study=study, evaluator=ev, trial_id=current.trial.id
    )
    session.commit()
    assert ahead.status == again.status == "trial"
    assert ahead.trial.id == again.trial.id != current.trial.id
    assert ahead.trial.shown_at is None
    # Asking past the prefetched trial assigns nothing more.
    beyond = service.trial_after(
        session=session, study=study, evaluator=ev, trial_id=ahead.trial.id
    )
    assert beyond.status == "unavailable"
    assert session.scalar(select(func.count(Trial.id))) == 2
    # The prefetched pair cannot be answered before the current one.
    with pytest.raises(errors.NotCurrentError):
        flow.submit(
            session=session,
            study=study,
            evaluator=ev,
            trial_id=ahead.trial.id,
            votes=all_left(study),
        )
    session.rollback()
    answer(session, study, ev, current)
    following = service.current_trial(session=session, study=study, evaluator=ev)
    assert following.trial.id == ahead.trial.id
    assert following.trial.shown_at is not None


def test_prefetch_at_the_end_says_done(session, settings):
    study = rating_study(session, settings, prompts=3, trials_per_evaluator=1)
    ev = evaluator(session, settings, study)
    current = service.current_trial(session=session, study=study, evaluator=ev)
    after = service.trial_after(
        session=session, study=study, evaluator=ev, trial_id=current.trial.id
    )
    assert after.status == "done"
    session.refresh(ev)
    assert ev.completed_at is None  # the last pair is still to be answered


# --- votes and quality control ------------------------------------------------------------


def test_min_view_time_fast_flags_and_times(session, settings):
    study = rating_study(session, settings, prompts=3, min_view_seconds=2, fast_trial_seconds=5)
    ev = evaluator(session, settings, study)
    result = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    shown = result.trial.shown_at
    with pytest.raises(errors.TooEarlyError):
        answer(session, study, ev, result, now=shown + timedelta(seconds=1))
    session.rollback()
    assert session.scalar(select(func.count(Vote.id))) == 0
    out = answer(session, study, ev, result, now=shown + timedelta(seconds=3))
    assert out.trial.flagged and out.trial.flag_reason.startswith("fast: answered 3.0 s")
    assert out.trial.answered_at - out.trial.shown_at == timedelta(seconds=3)
    slow = service.current_trial(session=session, study=study, evaluator=ev)
    out = answer(session, study, ev, slow, now=slow.trial.shown_at + timedelta(seconds=9))
    assert not out.trial.flagged and out.trial.flag_reason is None


def test_votes_are_checked_and_idempotent(session, settings):
    study = rating_study(session, settings, prompts=2)
    ev, other = evaluator(session, settings, study), evaluator(session, settings, study)
    result = service.current_trial(session=session, study=study, evaluator=ev)
    session.commit()
    keys = study.criterion_keys
    bad = [
        ({**all_left(study), "made_up": "left"}, errors.VoteValidationError),
        ({k: "left" for k in keys[:-1]}, errors.VoteValidationError),
        ({**all_left(study), keys[0]: "sideways"}, errors.VoteValidationError),
    ]
    for votes, error in bad:
        with pytest.raises(error):
            flow.submit(
                session=session, study=study, evaluator=ev, trial_id=result.trial.id, votes=votes
            )
        session.rollback()
    with pytest.raises(errors.TrialNotFoundError):
        flow.submit(
            session=session,
            study=study,
            evaluator=other,
            trial_id=result.trial.id,
            votes=all_left(study),
        )
    session.rollback()
    assert session.scalar(select(func.count(Vote.id))) == 0
    first = answer(session, study, ev, result)
    again = answer(session, study, ev, result)
    assert first.created and not again.created
    assert again.votes == first.votes and again.trial.answered_at == first.trial.answered_at
    with pytest.raises(errors.VoteConflictError):
        answer(session, study, ev, result, votes={**all_left(study), keys[0]: "tie"})
    session.rollback()
    stored = session.scalars(select(Vote.choice).where(Vote.trial_id == result.trial.id)).all()
    assert sorted(stored) == ["left"] * len(keys)


# --- joining ------------------------------------------------------------------------------


def test_invites_and_external_ids_map_to_one_evaluator(session, settings):
    study = rating_study(session, settings, prompts=2)
    link = enrollment.new_invites(secret=secret(settings), study=study, count=1)[0]
    token = link.split("invite=")[1]
    first = enrollment.join(session=session, secret=secret(settings), study=study, invite=token)
    session.commit()
    again = enrollment.join(session=session, secret=secret(settings), study=study, invite=token)
    assert again.resumed and again.evaluator.id == first.evaluator.id
    with pytest.raises(errors.EnrollmentError, match="invitation only"):
        enrollment.join(session=session, secret=secret(settings), study=study, external_id="PID1")
    # A participant id with the invite is recorded on the invite's one evaluator.
    with_pid = enrollment.join(
        session=session, secret=secret(settings), study=study, invite=token, external_id="PID1"
    )
    session.commit()
    assert with_pid.resumed and with_pid.evaluator.id == first.evaluator.id
    assert with_pid.evaluator.external_id == "PID1"
    back = enrollment.join(
        session=session, secret=secret(settings), study=study, invite=token, external_id=" PID1 "
    )
    assert back.resumed and back.evaluator.id == with_pid.evaluator.id
    with pytest.raises(errors.InviteUsedError, match="another participant id"):
        enrollment.join(
            session=session, secret=secret(settings), study=study, invite=token, external_id="P2"
        )
    with pytest.raises(errors.EnrollmentError, match="not valid"):
        enrollment.join(
            session=session, secret=secret(settings), study=study, invite=token[:-2] + "xx"
        )
    other = rating_study(session, settings, slug="other", prompts=1)
    with pytest.raises(errors.EnrollmentError, match="not valid"):
        enrollment.join(session=session, secret=secret(settings), study=other, invite=token)
    assert session.scalar(select(func.count(Evaluator.id))) == 1


def test_only_open_studies_take_evaluators(session, settings):
    study = rating_study(
        session, settings, prompts=1, open_enrollment=True, status=StudyStatus.draft
    )
    with pytest.raises(errors.StudyNotOpenError):
        enrollment.join(session=session, secret=secret(settings), study=study)
    study.status = StudyStatus.open
    ev = enrollment.join(session=session, secret=secret(settings), study=study).evaluator
    session.commit()
    study.status = StudyStatus.closed
    session.commit()
    with pytest.raises(errors.StudyClosedError):
        service.current_trial(session=session, study=study, evaluator=ev)
    assert session.scalar(select(func.count(Prompt.id))) == 1


def test_stale_open_trials_stop_counting_towards_coverage(session, settings, release_at_once):
    study = rating_study(session, settings, prompts=2)
    idle = evaluator(session, settings, study)
    held = service.current_trial(session=session, study=study, evaluator=idle).trial
    session.commit()
    # A fresh hold counts: the next evaluator gets the other matchup.
    ev = evaluator(session, settings, study)
    result = service.current_trial(session=session, study=study, evaluator=ev)
    assert result.trial.matchup_id != held.matchup_id
    answer(session, study, ev, result)
    # Abandoned for longer than the hold: its matchup is the least covered again.
    held.assigned_at = utcnow() - service.ASSIGNMENT_HOLD - timedelta(minutes=1)
    session.commit()
    late = evaluator(session, settings, study)
    assert service.current_trial(session=session, study=study, evaluator=late).trial.matchup_id == (
        held.matchup_id
    )


def test_matchups_missing_after_an_import_are_made_when_needed(session, settings):
    study = rating_study(session, settings, prompts=2, done=False)
    ev = evaluator(session, settings, study)
    mark_clips_done(session, settings, study)  # e.g. `vidarena clips import`, no ensure call
    session.commit()
    assert session.scalar(select(func.count(Matchup.id))) == 0
    result = service.current_trial(session=session, study=study, evaluator=ev)
    assert result.status == "trial"
    assert session.scalar(select(func.count(Matchup.id))) == 2


def test_media_cache_bounds_bytes_and_forgets_on_time(monkeypatch):
    import time as time_module

    from app.rating.media import MediaCache, MediaFound
    from app.studies.models import StudyStatus

    cache = MediaCache(max_bytes=800, status_seconds=2.0, clip_seconds=60.0)
    now = [1000.0]
    monkeypatch.setattr(time_module, "monotonic", lambda: now[0])
    assert cache.found(study_id=1, clip_id=7) is None
    cache.keep(study_id=1, clip_id=7, found=MediaFound(StudyStatus.open, "ab/key.gif"))
    cache.keep(study_id=1, clip_id=8, found=MediaFound(StudyStatus.open, None))  # not done
    assert cache.found(study_id=1, clip_id=7) == MediaFound(StudyStatus.open, "ab/key.gif")
    assert cache.found(study_id=1, clip_id=8) is None  # looked up again until it is done
    assert cache.found(study_id=2, clip_id=7) is None  # another study's clip 7: not this one
    now[0] += 2.5  # the study's status is stale: ask the database again
    assert cache.found(study_id=1, clip_id=7) is None
    # Bytes: least recently used go first; one object over an eighth of the budget never enters.
    for i in range(9):
        cache.keep_blob(f"k{i}", bytes(100))
    assert cache.blob("k0") is None and cache.blob("k8") is not None  # 800 bytes kept
    assert cache.blob("k1") is not None  # now the most recently used
    cache.keep_blob("k9", bytes(100))
    assert cache.blob("k1") is not None and cache.blob("k2") is None
    cache.keep_blob("big", bytes(101))
    assert cache.blob("big") is None


def test_evaluator_tokens_expire_and_stay_bound_to_their_study(monkeypatch):
    import time as time_module

    from app.rating import tokens

    token = tokens.evaluator_token("secret-" + "s" * 32, 7, "evaluator-1")
    assert tokens.parse_evaluator_token("secret-" + "s" * 32, token, 7) == "evaluator-1"
    assert tokens.parse_evaluator_token("secret-" + "s" * 32, token, 8) is None
    assert tokens.parse_evaluator_token("another-" + "s" * 32, token, 7) is None
    later = time_module.time() + tokens.EVALUATOR_MAX_AGE + 60
    monkeypatch.setattr(time_module, "time", lambda: later)  # verified before: now cached
    assert tokens.parse_evaluator_token("secret-" + "s" * 32, token, 7) is None


def test_overlong_evaluator_tokens_are_refused_before_any_cache():
    from app.rating import tokens

    secret = "secret-" + "s" * 32
    token = tokens.evaluator_token(secret, 7, "evaluator-1")
    assert len(token) <= tokens.MAX_EVALUATOR_TOKEN
    info = tokens._verified_evaluator_token.cache_info()
    assert tokens.parse_evaluator_token(secret, token + "x" * 600, 7) is None
    assert tokens._verified_evaluator_token.cache_info().currsize == info.currsize
