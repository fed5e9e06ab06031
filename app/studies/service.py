"""Study use cases. Keyword-only functions over a session; callers own the transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app.analysis.plan import Plan
from app.clips.models import Clip, ClipStatus
from app.db import utcnow
from app.studies.analysis import AnalysisSpec, CriterionTest
from app.studies.models import AnalysisChange, Arm, Prompt, Study, StudyStatus
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
        analysis=analysis_json(draft.analysis),
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


def get_by_id(*, session: Session, study_id: int) -> Study:
    """A study found by slug before (StudyDep) again, e.g. in a session of its own on the
    analysis lane; StudyNotFoundError if it was deleted since."""
    study = session.get(Study, study_id)
    if study is None:
        raise StudyNotFoundError(f"study {study_id} is gone: it was deleted")
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
    if status == StudyStatus.open and study.analysis_locked_at is None:
        study.analysis_locked_at = utcnow()  # the plan is fixed before the first vote
    session.flush()
    # Opening also makes matchups: callers open through rating.matchups.set_study_status.
    return study


# --- the analysis plan ----------------------------------------------------------------------


def analysis_json(spec: AnalysisSpec) -> dict[str, Any]:
    """The stored form of a plan (`study.analysis`, an `analysis_change`'s before and after):
    every field, defaults included, so a stored plan reads the same when defaults change."""
    return spec.model_dump(mode="json")


def analysis_spec(study: Study) -> AnalysisSpec:
    """The study's validated [analysis] table ({} stored: the defaults)."""
    return AnalysisSpec.model_validate(study.analysis or {})


def analysis_plan(study: Study, *, focus: str | None = None) -> Plan:
    """The plan the sequential verdicts test: what the dashboard, the report and the exports
    call (`app.analysis.plan.Plan`: alpha, one `Hypothesis` per criterion x opponent of the
    focus arm or every pair of arms (`compare`), stop, budget, adaptive).

    The focus arm is the one the plan names; where it names none (`analysis_spec(study).focus`
    is None), `focus`: pass the fastest arm (`dashboard.service.focus_arm(None, ...)`), never an
    arm a reader picked, so the plan does not follow the page's filters; None there: the first
    arm. Raises ValueError on a plan that no longer fits the study (not reachable through the
    study file or `set_analysis`, which check it).
    """
    spec = analysis_spec(study)
    arms = [arm.name for arm in study.arms]
    resolved = spec.focus or focus or arms[0]
    return spec.plan(criteria=study.criterion_keys, arms=arms, focus=resolved)


def set_analysis(
    *, session: Session, study: Study, spec: AnalysisSpec, reason: str = ""
) -> AnalysisChange | None:
    """Replace a study's analysis plan (checked against its criteria and arms by the caller:
    `studyfile.parse_analysis`). Before the lock (the study never opened) the plan simply
    changes; after it the change is kept with its time, before and after, and `reason`, and
    returned. An unchanged plan changes nothing (None)."""
    problems = spec.check(criteria=study.criterion_keys, arms=[a.name for a in study.arms])
    if problems:
        raise ValueError(
            "; ".join(f"analysis.{'.'.join(map(str, loc))}: {m}" for loc, m in problems)
        )
    before, after = analysis_json(analysis_spec(study)), analysis_json(spec)
    if before == after:
        return None
    study.analysis = after
    change = None
    if study.analysis_locked_at is not None:
        change = AnalysisChange(
            study_id=study.id, changed_at=utcnow(), before=before, after=after, reason=reason
        )
        session.add(change)
    session.flush()
    return change


def analysis_changes(*, session: Session, study: Study) -> list[AnalysisChange]:
    """Every change of the study's plan after its lock, oldest first."""
    return list(
        session.scalars(
            select(AnalysisChange)
            .where(AnalysisChange.study_id == study.id)
            .order_by(AnalysisChange.changed_at, AnalysisChange.id)
        )
    )


@dataclass(frozen=True)
class PlanChange:
    """One change of a plan after its lock, said in words: `lines` like `alpha: 0.05 -> 0.01`."""

    changed_at: datetime
    reason: str
    lines: list[str]


@dataclass(frozen=True)
class PlanView:
    """A study's analysis plan as pages show it (the study page; the dashboard and the report
    may show it beside the verdicts): the tests per criterion, when the plan was locked and
    every change after the lock with its time."""

    alpha: float
    focus: str | None  # None: the fastest arm, resolved when the results are analysed
    stop: str
    budget: int | None
    adaptive: bool
    compare: str  # "focus" | "best"
    tests: list[tuple[str, CriterionTest]]  # (criterion label, its test), in the study's order
    locked_at: datetime | None
    changes: list[PlanChange]

    @property
    def primary(self) -> list[str]:
        return [label for label, test in self.tests if test.primary]


def plan_view(*, session: Session, study: Study) -> PlanView:
    spec = analysis_spec(study)
    labels = {c["key"]: c["label"] for c in study.criteria}
    return PlanView(
        alpha=spec.alpha,
        focus=spec.focus,
        stop=spec.stop,
        budget=spec.budget,
        adaptive=spec.adaptive,
        compare=spec.compare,
        tests=[(labels[t.criterion], t) for t in spec.tests(study.criterion_keys)],
        locked_at=study.analysis_locked_at,
        changes=[
            PlanChange(c.changed_at, c.reason, describe_change(c.before, c.after))
            for c in analysis_changes(session=session, study=study)
        ],
    )


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed between two stored plans, one `key: old -> new` line per changed value
    (`criteria.motion_amplitude.margin: none -> 0.05`)."""
    old, new = _flat(before), _flat(after)
    return [
        f"{key}: {_shown(old.get(key))} -> {_shown(new.get(key))}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _flat(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            out.update(_flat(item, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = item
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)
