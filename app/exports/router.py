"""Downloads: votes.csv and clips.csv streamed from SQL, summary.csv / summary.json, and the
self-contained report. Admin only (every route comes from `admin_router`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from app.auth.deps import admin_router
from app.dashboard import service as dashboard_service
from app.dashboard.schemas import Filters
from app.exports import report, service
from app.ops import bulkhead
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


def _check_study(factory: sessionmaker[Session], slug: str) -> None:
    with factory() as session:
        _study(session, slug)


def _study(session: Session, slug: str) -> Study:
    try:
        return studies_service.get_by_slug(session=session, slug=slug)
    except studies_service.StudyNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


async def _streamed(request: Request, slug: str, kind: service.Kind) -> StreamingResponse:
    """A CSV export streamed from the analysis lane (app/ops/bulkhead.py): a burst of exports
    takes its threads and connections, not those of evaluators and admin pages."""
    factory = request.app.state.read_session_factory
    await bulkhead.in_analysis_lane(request, _check_study, factory, slug)
    chunks = bulkhead.iterate_in_lane(bulkhead.analysis_lane(request), _stream(factory, slug, kind))
    return StreamingResponse(chunks, media_type=CSV, headers=attachment(slug, f"{kind}.csv"))


def _summary(
    factory: sessionmaker[Session], slug: str, kind: service.Kind, filters: Filters
) -> tuple[str, str]:
    with factory() as session:
        study = _study(session, slug)
        return study.slug, "".join(
            service.export_chunks(session=session, study=study, kind=kind, filters=filters)
        )


def _report(factory: sessionmaker[Session], slug: str, filters: Filters) -> tuple[str, str]:
    with factory() as session:
        study = _study(session, slug)
        d, a = dashboard_service.full(session=session, study=study, filters=filters)
        return study.slug, report.html(d, a)


@router.get("/studies/{slug}/export/votes.csv", response_class=StreamingResponse)
async def export_votes(request: Request, slug: str) -> StreamingResponse:
    """One row per vote, streamed."""
    return await _streamed(request, slug, "votes")


@router.get("/studies/{slug}/export/clips.csv", response_class=StreamingResponse)
async def export_clips(request: Request, slug: str) -> StreamingResponse:
    """The render manifest: one row per clip with its arm's settings and telemetry."""
    return await _streamed(request, slug, "clips")


@router.get("/studies/{slug}/export/summary.csv", response_class=Response)
async def export_summary_csv(request: Request, slug: str, filters: FiltersDep) -> Response:
    """Every statistic as one long table (column `table` names the statistic)."""
    factory = request.app.state.read_session_factory
    name, text = await bulkhead.in_analysis_lane(
        request, _summary, factory, slug, "summary", filters
    )
    return Response(text, media_type=CSV, headers=attachment(name, "summary.csv"))


@router.get("/studies/{slug}/export/summary.json")
async def export_summary_json(request: Request, slug: str, filters: FiltersDep) -> Response:
    factory = request.app.state.read_session_factory
    name, text = await bulkhead.in_analysis_lane(
        request, _summary, factory, slug, "summary.json", filters
    )
    return Response(text, media_type="application/json", headers=attachment(name, "summary.json"))


@router.get("/studies/{slug}/export/report.html", response_class=HTMLResponse)
async def export_report(request: Request, slug: str, filters: FiltersDep) -> Response:
    """The self-contained HTML report (inline CSS and SVG, no script)."""
    factory = request.app.state.read_session_factory
    name, html = await bulkhead.in_analysis_lane(request, _report, factory, slug, filters)
    headers = {**attachment(name, "report.html"), "Content-Security-Policy": report.REPORT_CSP}
    return HTMLResponse(html, headers=headers)
