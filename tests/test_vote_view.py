"""The one vote view (app/rating/votes.py) on SQLite and PostgreSQL: its sides agree with the
trials' own, its winners with what was cast, and its study filter keeps other studies out."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.clips.models import Clip
from app.rating import votes
from app.rating.models import Trial, Vote
from app.studies.models import Arm
from tests.kit.studies import rating_study
from tests.kit.votes import cast_votes

RATES = {"video_text_relevance": 0.7, "motion_naturalness": 0.5, "overall_quality": 0.4}


@pytest.fixture
def two_studies(session, settings):  # type: ignore[no-untyped-def]
    rated = rating_study(session, settings, slug="viewed", prompts=3, open_enrollment=True)
    other = rating_study(session, settings, slug="other", prompts=2, open_enrollment=True)
    cast = cast_votes(session, settings, rated, favored="quokka-arm", rates=RATES, evaluators=2)
    cast_votes(session, settings, other, favored="quokka-arm", rates=RATES, evaluators=1)
    session.rollback()
    return rated, other, cast


@pytest.mark.parametrize("by_dialect", [False, True])
def test_sides_winners_and_the_study_filter(two_studies, session, by_dialect):
    rated, other, cast = two_studies
    dialect = session.get_bind().dialect.name if by_dialect else None
    arm_names = {arm_id: name for arm_id, name in session.execute(select(Arm.id, Arm.name))}
    arm_of_clip = {clip: arm for clip, arm in session.execute(select(Clip.id, Clip.arm_id))}
    rows = session.execute(
        votes.study_votes(
            Vote.id,
            Trial.id,
            Vote.criterion,
            Vote.choice,
            Trial.a_on_left,
            votes.left_arm_id,
            votes.right_arm_id,
            votes.left_clip_id,
            votes.right_clip_id,
            study_id=rated.id,
            dialect=dialect,
        ).order_by(Vote.id)
    ).all()
    trials = {t.id: t for t in session.scalars(select(Trial).options(selectinload(Trial.matchup)))}
    assert len(rows) == cast.votes > 0
    assert {trials[r[1]].matchup.study_id for r in rows} == {rated.id}  # none of `other`'s
    for row in rows:
        _, trial_id, criterion, choice, a_on_left, left_arm, right_arm, left_clip, right_clip = row
        trial = trials[trial_id]
        assert (left_clip, right_clip) == (trial.left_clip_id, trial.right_clip_id)
        assert (arm_of_clip[left_clip], arm_of_clip[right_clip]) == (left_arm, right_arm)
        matchup = trial.matchup
        assert votes.sides(matchup.arm_a_id, matchup.arm_b_id, a_on_left) == (left_arm, right_arm)
        # The winner read through the sides and through the matchup's own a/b agree with the cast.
        shown = {"left": left_arm, "right": right_arm}.get(choice)
        picked = {"a": matchup.arm_a_id, "b": matchup.arm_b_id}.get(votes.chosen(choice, a_on_left))
        assert shown == picked
        assert cast.winners[(trial_id, criterion)] == ("tie" if shown is None else arm_names[shown])
    other_votes = session.execute(
        votes.study_votes(Vote.id, study_id=other.id, dialect=dialect)
    ).all()
    everything = session.execute(votes.select_votes(Vote.id)).all()
    assert len(other_votes) > 0 and len(everything) == len(rows) + len(other_votes)
