"""Admin render panel: queue missing clips, retry failed ones, cancel, and live progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from app.auth import service as auth_service
from app.auth.deps import admin_router
from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.clips.schemas import ArmProgressOut, RenderProgressOut
from app.deps import ReadSessionDep, SessionDep, SettingsDep, StudyDep
from app.studies import service as studies_service
from app.text import plural

router = admin_router(tags=["render"])


@router.get("/studies/{slug}/render", response_model=RenderProgressOut, name="render_progress")
def render_progress(study: StudyDep, session: ReadSessionDep) -> RenderProgressOut:
    """Per arm: clips by status, what is rendering now (step of steps), median seconds, ETA."""
    arms = clips_service.progress(session=session, study=study)
    out = RenderProgressOut(
        study=study.slug,
        active=any(a.counts.get("queued", 0) + a.counts.get("rendering", 0) for a in arms),
        arms=[ArmProgressOut.model_validate(a, from_attributes=True) for a in arms],
    )
    # FastAPI validates a sync route's answer on a second thread hop: the connection must not
    # wait for a thread meanwhile.
    session.close()
    return out


@router.post("/studies/{slug}/render", name="render_queue")
def render_queue(
    request: Request,
    slug: str,
    session: SessionDep,
    settings: SettingsDep,
    action: Annotated[str, Form()] = "missing",
    tiny: Annotated[bool, Form()] = False,
) -> Response:
    """Queue the missing (or only the failed) clips, commit, then send the tasks."""
    study = _study(session, slug)
    if action not in {"missing", "retry_failed"}:
        raise HTTPException(status_code=422, detail=f"unknown action {action!r}")
    queue = clips_service.retry_failed if action == "retry_failed" else clips_service.queue_missing
    ids = queue(session=session, study=study, tiny=tiny)
    session.commit()
    try:
        send_renders(settings=settings, clips=[(i, tiny) for i in ids])
    except clips_service.QueueUnavailableError as exc:
        auth_service.flash(session=request.session, category="error", message=str(exc))
        return RedirectResponse(f"/admin/studies/{slug}#render", status_code=303)
    clips = plural(len(ids), "failed clip" if action == "retry_failed" else "clip")
    what = "re-queued" if action == "retry_failed" else "queued"
    note = " with tiny models" if tiny else ""
    auth_service.flash(
        session=request.session, category="success", message=f"{clips} {what}{note}."
    )
    return RedirectResponse(f"/admin/studies/{slug}#render", status_code=303)


@router.post("/studies/{slug}/render/cancel", name="render_cancel")
def render_cancel(request: Request, slug: str, session: SessionDep) -> Response:
    study = _study(session, slug)
    cancelled = clips_service.cancel(session=session, study=study)
    session.commit()
    auth_service.flash(
        session=request.session,
        category="success",
        message=f"{plural(cancelled, 'clip')} cancelled; rendering ones stop at their next step.",
    )
    return RedirectResponse(f"/admin/studies/{slug}#render", status_code=303)


def _study(session, slug: str):  # type: ignore[no-untyped-def]
    try:
        return studies_service.get_by_slug(session=session, slug=slug)
    except studies_service.StudyNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
