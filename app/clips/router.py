"""Admin render panel: queue missing clips, retry failed ones, cancel, and live progress; and the
same queueing as JSON for scripts and tests.

`POST /admin/api/studies/{slug}/render` (send `Accept: application/json` and the session's CSRF
token as `X-CSRF-Token`) does what the panel's form does and answers

- 202 `{"queued": 4, "sent": 4}`: clips marked queued and one render task sent for each. Clips
  already queued are sent again too (duplicates are harmless: a task only renders a clip it can
  claim), so a batch whose tasks never reached the broker (Redis was down) gets going again once
  the broker is back: call this route again.
- 503 `{"detail": {"code": "queue_unavailable", "message": "..."}}` with `Retry-After` while the
  broker is unreachable. The clips stay queued in SQL.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict

from app.auth import service as auth_service
from app.auth.deps import admin_router
from app.clips import service as clips_service
from app.clips.dispatch import queue_renders
from app.clips.schemas import ArmProgressOut, RenderProgressOut
from app.deps import ReadSessionDep, SessionDep, SettingsDep, StudyDep, StudyForUpdateDep
from app.ops import metrics
from app.text import plural

log = logging.getLogger(__name__)
RETRY_AFTER_S = 10
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
    study: StudyForUpdateDep,
    session: SessionDep,
    settings: SettingsDep,
    action: Annotated[str, Form()] = "missing",
    tiny: Annotated[bool, Form()] = False,
) -> Response:
    """Queue the missing (or only the failed) clips, commit, then send the tasks."""
    if action not in {"missing", "retry_failed"}:
        raise HTTPException(status_code=422, detail=f"unknown action {action!r}")
    try:
        ids, _ = queue_renders(
            session=session, settings=settings, study=study, action=action, tiny=tiny
        )
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
def render_cancel(
    request: Request, slug: str, study: StudyForUpdateDep, session: SessionDep
) -> Response:
    cancelled = clips_service.cancel(session=session, study=study)
    session.commit()
    auth_service.flash(
        session=request.session,
        category="success",
        message=f"{plural(cancelled, 'clip')} cancelled; rendering ones stop at their next step.",
    )
    return RedirectResponse(f"/admin/studies/{slug}#render", status_code=303)


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["missing", "retry_failed"] = "missing"
    tiny: bool = False


class RenderOut(BaseModel):
    queued: int
    sent: int


@router.post(
    "/api/studies/{slug}/render",
    response_model=RenderOut,
    status_code=202,
    responses={503: {"description": "The render queue (broker) is unreachable"}},
    tags=["ops"],
)
def queue_renders_json(
    slug: str,
    study: StudyForUpdateDep,
    session: SessionDep,
    settings: SettingsDep,
    body: RenderIn | None = None,
) -> JSONResponse:
    """The render panel's form as JSON: 202 with counts, or 503 while the broker is down."""
    body = body or RenderIn()
    try:
        ids, sent = queue_renders(
            session=session, settings=settings, study=study, action=body.action, tiny=body.tiny
        )
    except clips_service.QueueUnavailableError as exc:
        metrics.record_queue_unavailable()
        log.warning("render queue unavailable for %s: %s", slug, exc)
        return JSONResponse(
            {"detail": {"code": "queue_unavailable", "message": str(exc), "queued": exc.queued}},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    log.info("queued %d clip(s) of %s, sent %d task(s)", len(ids), slug, sent)
    return JSONResponse(RenderOut(queued=len(ids), sent=sent).model_dump(), status_code=202)
