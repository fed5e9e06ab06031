"""Admin pages for studies: list, create from an uploaded study file, view, change status."""

from __future__ import annotations

import base64
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.deps import admin_router
from app.clips import service as clips_service
from app.deps import ReadSessionDep, SessionDep, StudyDep, StudyForUpdateDep
from app.rating import matchups
from app.studies import service as studies_service
from app.studies.analysis import analysis_toml
from app.studies.models import Study, StudyStatus
from app.studies.studyfile import (
    MAX_FILE_BYTES,
    Problem,
    StudyFileError,
    decode_utf8,
    parse_analysis,
    parse_study,
)
from app.text import plural
from app.web.pages import templates

router = admin_router(tags=["studies"])

PROMPTS_PER_PAGE = 50
MAX_PLAN_CHARS = 20_000  # an [analysis] table typed into the study page's plan form
# A refused upload keeps both files in hidden fields (base64, a third larger), so a retry
# carries at most two new files and two kept ones. UPLOAD_BODY_LIMIT is the request-body limit
# main.py sets for /admin: an oversized upload is refused while it streams in, before parsing.
KEPT_LIMIT = 4 * (MAX_FILE_BYTES // 3 + 1) + 1024
UPLOAD_BODY_LIMIT = 2 * (MAX_FILE_BYTES + KEPT_LIMIT) + 64 * 1024
STATUS_HELP = {
    StudyStatus.draft: "being defined; nothing is rendered or rated",
    StudyStatus.rendering: "clips are being rendered",
    StudyStatus.open: "evaluators can rate",
    StudyStatus.closed: "no new ratings; results are final",
}


class UploadTooLargeError(ValueError):
    pass


# --- list and create ------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, name="admin_studies")
def list_page(request: Request, session: ReadSessionDep) -> Response:
    studies = studies_service.list_studies(session=session)
    rows = [(study, studies_service.counts(session=session, study=study)) for study in studies]
    return templates.TemplateResponse(request, "admin/studies.html", {"rows": rows})


@router.get("/studies/new", response_class=HTMLResponse, name="admin_study_new")
def new_page(request: Request) -> Response:
    return _render_new(request, status_code=200)


@router.post("/studies", response_class=HTMLResponse, form_limits={"max_part_size": KEPT_LIMIT})
def create(
    request: Request,
    session: SessionDep,
    study_file: Annotated[UploadFile | None, File()] = None,
    prompts_file: Annotated[UploadFile | None, File()] = None,
    kept_study_file: Annotated[str, Form()] = "",
    kept_prompts_file: Annotated[str, Form()] = "",
) -> Response:
    """Validate both files completely before writing anything; one transaction for the study.

    A refused form comes back with what was uploaded kept in hidden fields, so the admin
    replaces only the file that was wrong.
    """
    kept: dict[str, Upload] = {}
    problems: list[str] = []
    status_code = 422
    for field, upload, kept_value, default_name in (
        ("study", study_file, kept_study_file, "study.toml"),
        ("prompts", prompts_file, kept_prompts_file, "prompts.csv"),
    ):
        try:
            kept[field] = _chosen(upload, kept_value, default_name=default_name)
        except UploadTooLargeError as exc:
            problems.append(str(exc))
            status_code = 413
        except StudyFileError as exc:
            problems.extend(str(p) for p in exc.problems)
    if problems:
        return _render_new(request, problems=problems, kept=kept, status_code=status_code)
    toml, csv = kept["study"], kept["prompts"]
    try:
        # The study file may name its CSV (`prompts = ...`) or not: the uploaded CSV is used.
        draft = parse_study(
            toml_text=decode_utf8(toml.data, toml.name),
            toml_name=toml.name,
            prompts_bytes=csv.data,
            prompts_name=csv.name,
        )
    except StudyFileError as exc:
        return _render_new(request, problems=[str(p) for p in exc.problems], kept=kept)
    try:
        created = studies_service.create(session=session, draft=draft)
        session.commit()
    except studies_service.StudyExistsError as exc:
        return _render_new(request, problems=[str(exc)], kept=kept, status_code=409)
    except IntegrityError:  # the same slug created concurrently, between check and insert
        session.rollback()
        message = f"a study with slug {draft.slug!r} already exists"
        return _render_new(request, problems=[message], kept=kept, status_code=409)
    counts = [
        plural(len(draft.arms), "arm"),
        plural(len(draft.prompts), "prompt"),
        plural(len(draft.prompts) * len(draft.arms), "clip"),
    ]
    auth_service.flash(
        session=request.session,
        category="success",
        message=f"Created study “{created.name}”: {', '.join(counts)} pending.",
    )
    return RedirectResponse(f"/admin/studies/{created.slug}", status_code=303)


def _render_new(
    request: Request,
    *,
    problems: list[str] | None = None,
    kept: dict[str, Upload] | None = None,
    status_code: int = 422,
) -> Response:
    context = {"problems": problems or [], "kept": kept or {}, "max_mb": MAX_FILE_BYTES // 2**20}
    return templates.TemplateResponse(
        request, "admin/study_new.html", context, status_code=status_code
    )


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its base name and bytes."""

    name: str
    data: bytes

    @property
    def kept(self) -> str:
        """The hidden-field form that a refused form sends back: `name:base64`."""
        return f"{self.name}:{base64.b64encode(self.data).decode()}"

    @classmethod
    def from_kept(cls, value: str, *, default_name: str) -> Upload:
        name, _, encoded = value.rpartition(":")
        name = _base_name(name, default_name)
        try:
            data = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            message = "the file kept from the last try is damaged: choose it again"
            raise StudyFileError([Problem(name, 1, 1, message)]) from exc
        return cls(name, _within_limit(name, data))


def _chosen(upload: UploadFile | None, kept: str, *, default_name: str) -> Upload:
    """The newly chosen file, else the one kept from the last try; refuses none or too big."""
    if upload is not None and upload.filename:
        name = _base_name(upload.filename, default_name)
        return Upload(name, _within_limit(name, upload.file.read(MAX_FILE_BYTES + 1)))
    if kept:
        return Upload.from_kept(kept, default_name=default_name)
    raise StudyFileError([Problem(default_name, 1, 1, "no file chosen")])


def _base_name(name: str, default_name: str) -> str:
    return PurePath(name or default_name).name or default_name


def _within_limit(name: str, data: bytes) -> bytes:
    if len(data) > MAX_FILE_BYTES:
        limit_mb = MAX_FILE_BYTES // 2**20
        raise UploadTooLargeError(f"{name}: the file is larger than the {limit_mb} MB limit")
    return data


# --- one study ------------------------------------------------------------------------------


@router.get("/studies/{slug}", response_class=HTMLResponse, name="admin_study")
def study_page(
    request: Request,
    study: StudyDep,
    session: ReadSessionDep,
    theme: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    return _render_study(request, session=session, study=study, theme=theme or None, page=page)


@router.post("/studies/{slug}/status", response_class=HTMLResponse)
def change_status(
    request: Request,
    study: StudyForUpdateDep,
    session: SessionDep,
    status: Annotated[str, Form()] = "",
) -> Response:
    if status not in StudyStatus.__members__:
        error = f"unknown status {status!r}"
        return _render_study(request, session=session, study=study, error=error, status_code=422)
    new_status = StudyStatus(status)
    try:
        matchups.set_study_status(session=session, study=study, status=new_status)
        session.commit()
    except studies_service.TransitionError as exc:
        session.rollback()
        return _render_study(request, session=session, study=study, error=str(exc), status_code=409)
    auth_service.flash(
        session=request.session,
        category="success",
        message=f"Study “{study.name}” is now {new_status.value}.",
    )
    return RedirectResponse(f"/admin/studies/{study.slug}", status_code=303)


@router.post("/studies/{slug}/analysis", response_class=HTMLResponse)
def change_analysis(
    request: Request,
    study: StudyForUpdateDep,
    session: SessionDep,
    analysis: Annotated[str, Form(max_length=MAX_PLAN_CHARS)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Replace the study's analysis plan with an `[analysis]` table. After the lock (the study
    has opened) the change is still made, and kept with its time and reason."""
    try:
        spec = parse_analysis(
            toml_text=analysis,
            toml_name="analysis",
            criteria=study.criterion_keys,
            arms=[arm.name for arm in study.arms],
        )
    except StudyFileError as exc:
        return _render_study(
            request,
            session=session,
            study=study,
            plan_problems=[str(p) for p in exc.problems],
            plan_text=analysis,
            plan_reason=reason,
            status_code=422,
        )
    if spec == studies_service.analysis_spec(study):
        message = "The analysis plan is unchanged."
    else:
        change = studies_service.set_analysis(
            session=session, study=study, spec=spec, reason=reason.strip()
        )
        session.commit()
        message = (
            "Changed the analysis plan."
            if change is None
            else "Changed the analysis plan after its lock: the change is kept with its time."
        )
    auth_service.flash(session=request.session, category="success", message=message)
    return RedirectResponse(f"/admin/studies/{study.slug}#analysis-heading", status_code=303)


def _render_study(
    request: Request,
    *,
    session: Session,
    study: Study,
    theme: str | None = None,
    page: int = 1,
    error: str | None = None,
    plan_problems: list[str] | None = None,
    plan_text: str | None = None,
    plan_reason: str = "",
    status_code: int = 200,
) -> Response:
    render_progress = clips_service.progress(session=session, study=study)
    context: dict[str, Any] = {
        "study": study,
        "plan": studies_service.plan_view(session=session, study=study),
        "plan_text": (
            plan_text
            if plan_text is not None
            else analysis_toml(studies_service.analysis_spec(study))
        ),
        "plan_problems": plan_problems or [],
        "plan_reason": plan_reason,
        "counts": studies_service.counts(session=session, study=study),
        "transitions": sorted(
            studies_service.TRANSITIONS[study.status], key=list(StudyStatus).index
        ),
        "status_help": STATUS_HELP,
        "arms": [(arm, arm.arm_spec) for arm in study.arms],
        "error": error,
        "render_progress": render_progress,
        "render_errors": clips_service.recent_errors(session=session, study=study),
        "render_tiny": studies_service.last_render_tiny(session=session, study=study),
        "render_all_failed": _all_failed(render_progress),
        **_prompts_page(session=session, study=study, theme=theme, page=page),
    }
    return templates.TemplateResponse(request, "admin/study.html", context, status_code=status_code)


def _all_failed(arms: list[clips_service.ArmProgress]) -> bool:
    """Every clip that was rendered failed and none is still coming: the errors are the news."""
    total = Counter[str]()
    for arm in arms:
        total.update(arm.counts)
    return total["failed"] > 0 and not (total["done"] or total["queued"] or total["rendering"])


def _prompts_page(
    *, session: Session, study: Study, theme: str | None, page: int
) -> dict[str, Any]:
    """One page of the study's prompts (optionally of one theme) and prompts per theme."""
    prompts = studies_service.list_prompts(session=session, study=study)
    theme_counts = sorted(Counter(p.theme for p in prompts).items())
    shown = [p for p in prompts if p.theme == theme] if theme else prompts
    pages = max(1, math.ceil(len(shown) / PROMPTS_PER_PAGE))
    page = min(page, pages)
    start = (page - 1) * PROMPTS_PER_PAGE
    return {
        "theme": theme,
        "theme_counts": theme_counts,
        "prompts": shown[start : start + PROMPTS_PER_PAGE],
        "prompts_total": len(shown),
        "prompts_first": start + 1,
        "page": page,
        "pages": pages,
    }
