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
from app.deps import StudyDep
from app.exports import report, service
from app.ops import bulkhead
from app.studies import service as studies_service
from app.studies.models import Study

router = admin_router(tags=["exports"])
CSV = "text/csv; charset=utf-8"
FiltersDep = Annotated[Filters, Query()]


def attachment(slug: str, name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{slug}-{name}"'}


def _stream(factory: sessionmaker[Session], study_id: int, kind: service.Kind) -> Iterator[str]:
    """Export chunks from a session of its own, open while the response streams (the request's
    session is closed by then) and closed when it ends or the client goes away."""
    with factory() as session:
        study = studies_service.get_by_id(session=session, study_id=study_id)
        yield from service.export_chunks(session=session, study=study, kind=kind)


async def _streamed(request: Request, study: Study, kind: service.Kind) -> StreamingResponse:
    """A CSV export streamed from the analysis lane (app/ops/bulkhead.py): a burst of exports
    takes its threads and connections, not those of evaluators and admin pages."""
    factory = request.app.state.read_session_factory
    chunks = bulkhead.iterate_in_lane(
        bulkhead.analysis_lane(request), _stream(factory, study.id, kind)
    )
    return StreamingResponse(chunks, media_type=CSV, headers=attachment(study.slug, f"{kind}.csv"))


def _summary(
    factory: sessionmaker[Session], study_id: int, kind: service.Kind, filters: Filters
) -> str:
    with factory() as session:
        study = studies_service.get_by_id(session=session, study_id=study_id)
        return "".join(
            service.export_chunks(session=session, study=study, kind=kind, filters=filters)
        )


def _report(factory: sessionmaker[Session], study_id: int, filters: Filters) -> str:
    with factory() as session:
        study = studies_service.get_by_id(session=session, study_id=study_id)
        d, a = dashboard_service.full(session=session, study=study, filters=filters)
        return report.html(d, a)


@router.get("/studies/{slug}/export/votes.csv", response_class=StreamingResponse)
async def export_votes(request: Request, study: StudyDep) -> StreamingResponse:
    """One row per vote, streamed."""
    return await _streamed(request, study, "votes")


@router.get("/studies/{slug}/export/clips.csv", response_class=StreamingResponse)
async def export_clips(request: Request, study: StudyDep) -> StreamingResponse:
    """The render manifest: one row per clip with its arm's settings and telemetry."""
    return await _streamed(request, study, "clips")


@router.get("/studies/{slug}/export/summary.csv", response_class=Response)
async def export_summary_csv(request: Request, study: StudyDep, filters: FiltersDep) -> Response:
    """Every statistic as one long table (column `table` names the statistic)."""
    factory = request.app.state.read_session_factory
    text = await bulkhead.in_analysis_lane(request, _summary, factory, study.id, "summary", filters)
    return Response(text, media_type=CSV, headers=attachment(study.slug, "summary.csv"))


@router.get("/studies/{slug}/export/summary.json")
async def export_summary_json(request: Request, study: StudyDep, filters: FiltersDep) -> Response:
    factory = request.app.state.read_session_factory
    text = await bulkhead.in_analysis_lane(
        request, _summary, factory, study.id, "summary.json", filters
    )
    headers = attachment(study.slug, "summary.json")
    return Response(text, media_type="application/json", headers=headers)


@router.get("/studies/{slug}/export/report.html", response_class=HTMLResponse)
async def export_report(request: Request, study: StudyDep, filters: FiltersDep) -> Response:
    """The self-contained HTML report (inline CSS and SVG, no script)."""
    factory = request.app.state.read_session_factory
    html = await bulkhead.in_analysis_lane(request, _report, factory, study.id, filters)
    headers = {
        **attachment(study.slug, "report.html"),
        "Content-Security-Policy": report.REPORT_CSP,
    }
    return HTMLResponse(html, headers=headers)
