"""Admin pages for studies: list, create from an uploaded study file, view, change status."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.deps import admin_router
from app.clips import service as clips_service
from app.deps import ReadSessionDep, SessionDep, StudyDep
from app.studies import service as studies_service
from app.studies.models import Study, StudyStatus
from app.studies.studyfile import (
    MAX_FILE_BYTES,
    Problem,
    StudyFileError,
    decode_utf8,
    parse_study,
)
from app.web import templates

router = admin_router(tags=["studies"])

PROMPTS_PER_PAGE = 50
# Two files of MAX_FILE_BYTES plus multipart overhead: the request-body limit main.py sets
# for /admin, so an oversized upload is refused while it streams in, before any parsing.
UPLOAD_BODY_LIMIT = 2 * MAX_FILE_BYTES + 64 * 1024
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
    return _render_new(request)


@router.post("/studies", response_class=HTMLResponse)
def create(
    request: Request,
    session: SessionDep,
    study_file: Annotated[UploadFile | None, File()] = None,
    prompts_file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Validate both files completely before writing anything; one transaction for the study."""
    try:
        toml_name, toml_bytes = _read_upload(study_file, default_name="study.toml")
        prompts_name, prompts_bytes = _read_upload(prompts_file, default_name="prompts.csv")
        # The study file's `prompts = ...` path is ignored: the uploaded CSV is the prompts.
        draft = parse_study(
            toml_text=decode_utf8(toml_bytes, toml_name),
            toml_name=toml_name,
            prompts_bytes=prompts_bytes,
            prompts_name=prompts_name,
        )
        study = studies_service.create(session=session, draft=draft)
        session.commit()
    except UploadTooLargeError as exc:
        return _render_new(request, problems=[str(exc)], status_code=413)
    except StudyFileError as exc:
        return _render_new(request, problems=[str(p) for p in exc.problems], status_code=422)
    except studies_service.StudyExistsError as exc:
        return _render_new(request, problems=[str(exc)], status_code=409)
    except IntegrityError:  # the same slug created concurrently, between check and insert
        session.rollback()
        message = f"a study with slug {draft.slug!r} already exists"
        return _render_new(request, problems=[message], status_code=409)
    clips = len(draft.prompts) * len(draft.arms)
    auth_service.flash(
        session=request.session,
        category="success",
        message=f"Created study “{study.name}”: {len(draft.arms)} arms, "
        f"{len(draft.prompts)} prompts, {clips} clips pending.",
    )
    return RedirectResponse(f"/admin/studies/{study.slug}", status_code=303)


def _render_new(
    request: Request, *, problems: list[str] | None = None, status_code: int = 200
) -> Response:
    context = {"problems": problems or [], "max_mb": MAX_FILE_BYTES // 2**20}
    return templates.TemplateResponse(
        request, "admin/study_new.html", context, status_code=status_code
    )


def _read_upload(upload: UploadFile | None, *, default_name: str) -> tuple[str, bytes]:
    """The upload's base name and bytes, refusing an empty or oversized file."""
    name = PurePath((upload.filename if upload else "") or default_name).name or default_name
    if upload is None or not upload.filename:
        raise StudyFileError([Problem(name, 1, 1, "no file chosen")])
    data = upload.file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        limit_mb = MAX_FILE_BYTES // 2**20
        raise UploadTooLargeError(f"{name}: the file is larger than the {limit_mb} MB limit")
    return name, data


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
    request: Request, slug: str, session: SessionDep, status: Annotated[str, Form()] = ""
) -> Response:
    study = _get_for_update(session=session, slug=slug)
    if status not in StudyStatus.__members__:
        error = f"unknown status {status!r}"
        return _render_study(request, session=session, study=study, error=error, status_code=422)
    new_status = StudyStatus(status)
    try:
        studies_service.set_status(session=session, study=study, status=new_status)
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


def _get_for_update(*, session: Session, slug: str) -> Study:
    """The study loaded in the write session (StudyDep's belongs to the read session)."""
    try:
        return studies_service.get_by_slug(session=session, slug=slug)
    except studies_service.StudyNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


def _render_study(
    request: Request,
    *,
    session: Session,
    study: Study,
    theme: str | None = None,
    page: int = 1,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "study": study,
        "counts": studies_service.counts(session=session, study=study),
        "transitions": sorted(
            studies_service.TRANSITIONS[study.status], key=list(StudyStatus).index
        ),
        "status_help": STATUS_HELP,
        "arms": [(arm, arm.arm_spec) for arm in study.arms],
        "error": error,
        "render_progress": clips_service.progress(session=session, study=study),
        "render_errors": clips_service.recent_errors(session=session, study=study),
        **_prompts_page(session=session, study=study, theme=theme, page=page),
    }
    return templates.TemplateResponse(request, "admin/study.html", context, status_code=status_code)


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
