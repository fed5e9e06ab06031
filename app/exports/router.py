"""Downloads: votes.csv and clips.csv streamed from SQL, summary.csv / summary.json, and the
self-contained report. Admin only (every route comes from `admin_router`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from app.auth.deps import admin_router
from app.dashboard import service as dashboard_service
from app.dashboard.schemas import Filters
from app.deps import ReadSessionDep, StudyDep
from app.exports import report, service
from app.studies import service as studies_service
from app.studies.models import Study

router = admin_router(tags=["exports"])
CSV = "text/csv; charset=utf-8"
FiltersDep = Annotated[Filters, Query()]


def attachment(slug: str, name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{slug}-{name}"'}


def _stream(factory: sessionmaker[Session], slug: str, kind: service.Kind) -> Iterator[str]:
    """Export chunks from a session of its own, open while the response streams (the request's
    session is closed by then) and closed when it ends or the client goes away."""
    with factory() as session:
        study: Study = studies_service.get_by_slug(session=session, slug=slug)
        yield from service.export_chunks(session=session, study=study, kind=kind)


@router.get("/studies/{slug}/export/votes.csv", response_class=StreamingResponse)
def export_votes(request: Request, study: StudyDep) -> StreamingResponse:
    """One row per vote, streamed."""
    chunks = _stream(request.app.state.read_session_factory, study.slug, "votes")
    return StreamingResponse(chunks, media_type=CSV, headers=attachment(study.slug, "votes.csv"))


@router.get("/studies/{slug}/export/clips.csv", response_class=StreamingResponse)
def export_clips(request: Request, study: StudyDep) -> StreamingResponse:
    """The render manifest: one row per clip with its arm's settings and telemetry."""
    chunks = _stream(request.app.state.read_session_factory, study.slug, "clips")
    return StreamingResponse(chunks, media_type=CSV, headers=attachment(study.slug, "clips.csv"))


@router.get("/studies/{slug}/export/summary.csv", response_class=Response)
def export_summary_csv(study: StudyDep, session: ReadSessionDep, filters: FiltersDep) -> Response:
    """Every statistic as one long table (column `table` names the statistic)."""
    chunks = service.export_chunks(session=session, study=study, kind="summary", filters=filters)
    return Response("".join(chunks), media_type=CSV, headers=attachment(study.slug, "summary.csv"))


@router.get("/studies/{slug}/export/summary.json")
def export_summary_json(study: StudyDep, session: ReadSessionDep, filters: FiltersDep) -> Response:
    text = "".join(
        service.export_chunks(session=session, study=study, kind="summary.json", filters=filters)
    )
    return Response(
        text, media_type="application/json", headers=attachment(study.slug, "summary.json")
    )


@router.get("/studies/{slug}/export/report.html", response_class=HTMLResponse)
def export_report(study: StudyDep, session: ReadSessionDep, filters: FiltersDep) -> Response:
    """The self-contained HTML report (inline CSS and SVG, no script)."""
    headers = {
        **attachment(study.slug, "report.html"),
        "Content-Security-Policy": report.REPORT_CSP,
    }
    d, a = dashboard_service.full(session=session, study=study, filters=filters)
    return HTMLResponse(report.html(d, a), headers=headers)
