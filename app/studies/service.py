"""Study use cases. Keyword-only functions over a session; callers own the transaction."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app.clips.models import Clip, ClipStatus
from app.studies.models import Arm, Prompt, Study, StudyStatus
from app.studies.schemas import SLUG_PATTERN
from app.studies.studyfile import StudyDraft

# Allowed status moves. Re-opening a closed study and going back to draft from rendering are
# deliberate: a study is closed to stop new evaluators, not destroyed.
TRANSITIONS: dict[StudyStatus, set[StudyStatus]] = {
    StudyStatus.draft: {StudyStatus.rendering, StudyStatus.open},
    StudyStatus.rendering: {StudyStatus.draft, StudyStatus.open},
    StudyStatus.open: {StudyStatus.closed, StudyStatus.rendering},
    StudyStatus.closed: {StudyStatus.open},
}


class StudyExistsError(ValueError):
    pass


class StudyNotFoundError(LookupError):
    pass


class TransitionError(ValueError):
    pass


def create(*, session: Session, draft: StudyDraft) -> Study:
    """Write a validated study with its arms, prompts and one pending clip per prompt x arm."""
    if session.scalar(select(Study.id).where(Study.slug == draft.slug)) is not None:
        raise StudyExistsError(
            f"a study with slug {draft.slug!r} already exists: set another `slug` in the study "
            "file, or delete the existing study"
        )
    study = Study(
        slug=draft.slug,
        name=draft.name,
        description=draft.description.strip(),
        criteria=[c.model_dump() for c in draft.criteria],
        rating=draft.rating.model_dump(),
        study_file=draft.study_file,
    )
    study.arms = [
        Arm(name=a.name, position=i, spec=a.model_dump(mode="json"))
        for i, a in enumerate(draft.arms, start=1)
    ]
    study.prompts = [
        Prompt(position=i, text=p.text, theme=p.theme, seed=p.seed)
        for i, p in enumerate(draft.prompts, start=1)
    ]
    session.add(study)
    session.flush()
    session.add_all(Clip(prompt_id=p.id, arm_id=a.id) for p in study.prompts for a in study.arms)
    session.flush()
    return study


def get_by_slug(*, session: Session, slug: str) -> Study:
    # A slug no study can have never reaches the database (PostgreSQL refuses a NUL in a query).
    study = (
        session.scalar(select(Study).where(Study.slug == slug))
        if re.fullmatch(SLUG_PATTERN, slug)
        else None
    )
    if study is None:
        raise StudyNotFoundError(f"no study with slug {slug!r}: `vidarena study list` shows them")
    return study


def list_studies(*, session: Session) -> list[Study]:
    return list(
        session.scalars(select(Study).options(selectinload(Study.arms)).order_by(Study.created_at))
    )


def counts(*, session: Session, study: Study) -> dict[str, int]:
    """Numbers shown beside a study: prompts, themes, arms and clips by status."""
    prompts, themes = session.execute(
        select(func.count(Prompt.id), func.count(func.distinct(Prompt.theme))).where(
            Prompt.study_id == study.id
        )
    ).one()
    by_status = dict(
        session.execute(
            select(Clip.status, func.count(Clip.id))
            .join(Prompt, Prompt.id == Clip.prompt_id)
            .where(Prompt.study_id == study.id)
            .group_by(Clip.status)
        ).all()
    )
    result = {"prompts": prompts, "themes": themes, "arms": len(study.arms)}
    result.update({f"clips_{s.value}": by_status.get(s, 0) for s in ClipStatus})
    return result


def last_render_tiny(*, session: Session, study: Study) -> bool:
    """Whether the study's latest render batch used tiny models: the render panel's default,
    so a demo study is not re-queued with real models (downloads) by an unticked box."""
    tiny = session.scalar(
        select(Clip.tiny)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study.id, Clip.queued_at.is_not(None))
        .order_by(Clip.queued_at.desc(), Clip.id.desc())
        .limit(1)
    )
    return bool(tiny)


def themes(*, session: Session, study: Study) -> list[str]:
    return list(
        session.scalars(
            select(Prompt.theme)
            .where(Prompt.study_id == study.id)
            .distinct()
            .order_by(Prompt.theme)
        )
    )


def list_prompts(*, session: Session, study: Study, theme: str | None = None) -> list[Prompt]:
    query = select(Prompt).where(Prompt.study_id == study.id).order_by(Prompt.position)
    if theme:
        query = query.where(Prompt.theme == theme)
    return list(session.scalars(query))


def set_status(*, session: Session, study: Study, status: StudyStatus) -> Study:
    if status == study.status:
        return study
    if status not in TRANSITIONS[study.status]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[study.status]))
        raise TransitionError(
            f"study {study.slug!r} is {study.status.value}; it can move to {allowed}, "
            f"not {status.value}"
        )
    study.status = status
    session.flush()
    # Opening also makes matchups: callers open through rating.matchups.set_study_status.
    return study
