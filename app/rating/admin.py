"""Admin: the study's evaluator links (open-enrollment link, personal invites) and rating counts,
and the evaluators page (each evaluator's trials and gold checks: accuracy, flag, marked for
rejection).

Every route comes from `admin_router()`, so it requires an admin session and a CSRF token.
Invites are stateless signed tokens: generating them writes nothing; each becomes an evaluator
when first used.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import case, func, select

from app.analysis.quality import STRAIGHT_LINE_MIN_TRIALS
from app.auth.deps import admin_router
from app.dashboard.tally import straight_liners
from app.deps import ReadSessionDep, StudyDep
from app.rating import enrollment, gold, service
from app.rating.deps import SecretDep
from app.rating.models import Evaluator, Trial
from app.web.pages import templates

router = admin_router(tags=["rating"])
MAX_INVITES = 1000


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _counts(session: ReadSessionDep, study_id: int) -> dict[str, int]:
    evaluators, completed = session.execute(
        select(func.count(Evaluator.id), func.count(Evaluator.completed_at)).where(
            Evaluator.study_id == study_id
        )
    ).one()
    answered, flagged = session.execute(
        select(
            func.count(Trial.answered_at),
            func.coalesce(func.sum(case((Trial.flagged, 1), else_=0)), 0),
        )
        .join(Evaluator, Evaluator.id == Trial.evaluator_id)
        .where(Evaluator.study_id == study_id)
    ).one()
    return {
        "evaluators": evaluators,
        "completed": completed,
        "answered": answered,
        "flagged": int(flagged),
    }


def _platform(session: ReadSessionDep, study_id: int) -> dict[int, tuple[str | None, ...]]:
    """evaluator id -> (platform study id, platform session id, code given at the end)."""
    rows = session.execute(
        select(
            Evaluator.id,
            Evaluator.external_study_id,
            Evaluator.external_session_id,
            Evaluator.completion_code,
        ).where(Evaluator.study_id == study_id)
    )
    return {evaluator_id: tuple(values) for evaluator_id, *values in rows}


def _render(
    request: Request,
    *,
    session: ReadSessionDep,
    study: StudyDep,
    secret: str,
    invites: list[str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    spec = enrollment.rating_spec(study)
    link = enrollment.study_link(secret=secret, study=study, base_url=base_url(request))
    context = {
        "study": study,
        "spec": spec,
        "link": link,
        "external_link": f"{link}?{spec.external_id_param}=",
        "matchups": service.count_ready_matchups(session=session, study=study),
        "pairs": service.planned_trials(session=session, study=study),
        "counts": _counts(session, study.id),
        "invites": invites or [],
        "max_invites": MAX_INVITES,
        "error": error,
    }
    return templates.TemplateResponse(
        request, "rate/admin_invites.html", context, status_code=status_code
    )


@router.get("/studies/{slug}/invites", response_class=HTMLResponse, name="admin_study_invites")
def invites_page(
    request: Request, study: StudyDep, session: ReadSessionDep, secret: SecretDep
) -> Response:
    return _render(request, session=session, study=study, secret=secret)


@router.get(
    "/studies/{slug}/evaluators", response_class=HTMLResponse, name="admin_study_evaluators"
)
def evaluators_page(request: Request, study: StudyDep, session: ReadSessionDep) -> Response:
    """Every evaluator with their answered and flagged trials and gold checks."""
    context = {
        "study": study,
        "spec": enrollment.rating_spec(study),
        "rows": gold.evaluator_checks(session=session, study=study),
        "reject_after": gold.REJECT_AFTER_FAILURES,
        "platform": _platform(session, study.id),
        "straight": straight_liners(session, study=study),
        "straight_min": STRAIGHT_LINE_MIN_TRIALS,
    }
    return templates.TemplateResponse(request, "rate/admin_evaluators.html", context)


@router.post("/studies/{slug}/invites", response_class=HTMLResponse)
def make_invites(
    request: Request,
    study: StudyDep,
    session: ReadSessionDep,
    secret: SecretDep,
    count: Annotated[str, Form()] = "",
) -> Response:
    try:
        n = int(count)
        if not 1 <= n <= MAX_INVITES:
            raise ValueError
    except ValueError:
        error = f"Enter how many invite links to make: a whole number from 1 to {MAX_INVITES}."
        return _render(
            request, session=session, study=study, secret=secret, error=error, status_code=422
        )
    invites = enrollment.new_invites(
        secret=secret, study=study, count=n, base_url=base_url(request)
    )
    return _render(request, session=session, study=study, secret=secret, invites=invites)
