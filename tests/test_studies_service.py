"""Creating studies from files into a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.clips.models import Clip, ClipStatus
from app.studies import service as studies_service
from app.studies.models import Arm, Prompt, Study, StudyStatus
from tests.kit.studies import example_study, small_study


def test_example_study_has_two_arms_100_prompts_and_ten_themes(session):
    study = example_study(session)
    counts = studies_service.counts(session=session, study=study)
    assert counts["arms"] == 2
    assert counts["prompts"] == 100
    assert counts["themes"] >= 10
    assert counts["clips_pending"] == 200
    arms = {a.name: a.arm_spec for a in study.arms}
    assert arms["animatediff"].resolved_scheduler.name == "ddim"
    assert arms["animatediff"].denoiser_passes == 50
    assert arms["lightning-4step"].lightning_checkpoint == (
        "animatediff_lightning_4step_diffusers.safetensors"
    )
    assert {(a.num_frames, a.width, a.height, a.fps) for a in arms.values()} == {(16, 512, 512, 8)}


def test_duplicate_slug_is_refused_and_keeps_the_first(session):
    small_study(session, slug="dup")
    with pytest.raises(studies_service.StudyExistsError, match="'dup' already exists"):
        small_study(session, slug="dup")
    session.rollback()
    assert session.scalar(select(func.count(Study.id))) == 1
    assert session.scalar(select(func.count(Prompt.id))) == 2


def test_status_moves_follow_the_lifecycle(session):
    study = small_study(session)
    assert study.status == StudyStatus.draft
    for status in (StudyStatus.rendering, StudyStatus.open, StudyStatus.closed, StudyStatus.open):
        studies_service.set_status(session=session, study=study, status=status)
    with pytest.raises(studies_service.TransitionError, match="it can move to"):
        studies_service.set_status(session=session, study=study, status=StudyStatus.draft)


def test_filter_prompts_by_theme(session):
    study = example_study(session)
    themes = studies_service.themes(session=session, study=study)
    wildlife = studies_service.list_prompts(session=session, study=study, theme="wildlife")
    assert "wildlife" in themes
    assert wildlife and all(p.theme == "wildlife" for p in wildlife)


def test_one_clip_per_prompt_and_arm_is_enforced(session):
    study = small_study(session)
    prompt, arm = study.prompts[0], study.arms[0]
    session.add(Clip(prompt_id=prompt.id, arm_id=arm.id))
    with pytest.raises(Exception, match=r"(?i)unique"):
        session.flush()
    session.rollback()


def test_done_clip_needs_media(session):
    small_study(session)
    clip = session.scalars(select(Clip)).first()
    clip.status = ClipStatus.done
    with pytest.raises(Exception, match=r"(?i)check|constraint"):
        session.flush()
    session.rollback()


def test_deleting_a_study_cascades(session):
    study = small_study(session)
    session.delete(study)
    session.commit()
    assert session.scalar(select(func.count(Arm.id))) == 0
    assert session.scalar(select(func.count(Clip.id))) == 0
