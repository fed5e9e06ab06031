"""JSON API for queueing renders: `POST /admin/api/studies/{slug}/render`.

The admin page's form (app/clips/router.py) answers with a redirect and a flash message; scripts
and tests want a status code. This route does the same work and answers

- 202 `{"queued": 4, "sent": 4}`: clips marked queued and one render task sent for each. Clips
  already queued are sent again too (duplicates are harmless: a task only renders a clip it can
  claim), so a batch whose tasks never reached the broker (Redis was down) gets going again once
  the broker is back: call this route again.
- 503 `{"detail": {"code": "queue_unavailable", "message": "..."}}` with `Retry-After` while the
  broker is unreachable. The clips stay queued in SQL.

Send `Accept: application/json` and the session's CSRF token as `X-CSRF-Token`.
"""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from app.auth.deps import admin_router
from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.deps import SessionDep, SettingsDep
from app.ops import metrics
from app.studies import service as studies_service

log = logging.getLogger(__name__)
RETRY_AFTER_S = 10

router = admin_router(tags=["ops"])


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
)
def queue_renders(
    slug: str, session: SessionDep, settings: SettingsDep, body: RenderIn | None = None
) -> JSONResponse:
    body = body or RenderIn()
    try:
        study = studies_service.get_by_slug(session=session, slug=slug)
    except studies_service.StudyNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    queue = (
        clips_service.retry_failed if body.action == "retry_failed" else clips_service.queue_missing
    )
    ids = queue(session=session, study=study, tiny=body.tiny)
    session.commit()
    try:
        sent = send_renders(settings=settings, clips=[(i, body.tiny) for i in ids])
    except clips_service.QueueUnavailableError as exc:
        metrics.record_queue_unavailable()
        log.warning("render queue unavailable for %s: %s", slug, exc)
        return JSONResponse(
            {"detail": {"code": "queue_unavailable", "message": str(exc), "queued": len(ids)}},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    log.info("queued %d clip(s) of %s, sent %d task(s)", len(ids), slug, sent)
    out = RenderOut(queued=len(ids), sent=sent)
    return JSONResponse(out.model_dump(), status_code=202)
