"""The live dashboard: a page, its live part as HTML, a server-sent event stream of that part,
and the expensive statistics on request. Admin only (every route comes from `admin_router`).

The stream polls `service.change_token` (three indexed queries) every POLL_SECONDS in a worker
thread and pushes a `summary` event (the re-rendered live part) only when the dashboard changed;
a comment line every KEEPALIVE_SECONDS keeps proxies from closing an idle stream. It ends after
STREAM_SECONDS (the browser reconnects, and the admin session is checked again) or as soon as
the client goes away.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from app.auth.deps import admin_router
from app.dashboard import blinding, charts, service
from app.dashboard.schemas import Dashboard, Filters
from app.deps import ReadSessionDep, StudyDep
from app.ops import bulkhead
from app.rating.deps import StorageDep
from app.studies import service as studies_service
from app.studies.models import Study
from app.web.pages import templates

router = admin_router(tags=["dashboard"])

KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 600.0
NO_STORE = {"Cache-Control": "no-store"}
FiltersDep = Annotated[Filters, Query()]
_cache_lock = threading.Lock()
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # exactly the line breaks of the SSE format


def get_cache(request: Request) -> service.DashboardCache:
    """This app's dashboard caches (created on first use)."""
    return get_app_cache(request.app)


def get_app_cache(app: Any) -> service.DashboardCache:
    """The dashboard caches of `app` (created on first use), shared with the stop check."""
    with _cache_lock:
        cache = getattr(app.state, "dashboard_cache", None)
        if cache is None:
            cache = app.state.dashboard_cache = service.DashboardCache()
        return cache


def render_live(d: Dashboard) -> str:
    return templates.get_template("dashboard/_live.html").render(d=d, charts=charts)


@router.get("/studies/{slug}/dashboard", response_class=HTMLResponse, name="admin_dashboard")
def dashboard_page(
    request: Request, study: StudyDep, session: ReadSessionDep, filters: FiltersDep
) -> Response:
    d = service.live(session=session, study=study, filters=filters, cache=get_cache(request))
    context = {"study": study, "d": d, "charts": charts}
    return templates.TemplateResponse(request, "dashboard/page.html", context, headers=NO_STORE)


@router.get("/studies/{slug}/dashboard/live", response_class=HTMLResponse)
def dashboard_live(
    request: Request, study: StudyDep, session: ReadSessionDep, filters: FiltersDep
) -> Response:
    """The live part alone (what each `summary` event carries)."""
    d = service.live(session=session, study=study, filters=filters, cache=get_cache(request))
    return HTMLResponse(render_live(d), headers=NO_STORE)


@router.get("/studies/{slug}/dashboard/advanced", response_class=HTMLResponse)
async def dashboard_advanced(
    request: Request, study: StudyDep, filters: FiltersDep, fresh: bool = False
) -> Response:
    """Bootstrap, agreement and evaluator quality (seconds at a million votes; cached), on the
    analysis lane (app/ops/bulkhead.py), not the threads evaluators and admin pages share."""
    query = filters.query()
    refresh = f"{request.url.path}?{query + '&' if query else ''}fresh=1"
    factory, cache = request.app.state.read_session_factory, get_cache(request)

    def render(session: Session, study: Study) -> str:
        a = service.advanced(
            session=session, study=study, filters=filters, cache=cache, fresh=fresh
        )
        d = service.live(session=session, study=study, filters=filters, cache=cache)
        return templates.get_template("dashboard/_advanced.html").render(
            a=a, d=d, charts=charts, refresh_url=refresh
        )

    html = await bulkhead.in_analysis_lane(request, _with_study, factory, study.id, render)
    return HTMLResponse(html, headers=NO_STORE)


@router.get("/studies/{slug}/dashboard/blinding", response_class=HTMLResponse)
async def dashboard_blinding(
    request: Request, study: StudyDep, storage: StorageDep, fresh: bool = False
) -> Response:
    """The blinding audit (every matchup's clips read from storage; cached for minutes), on the
    analysis lane like the robustness panel."""
    factory, cache = request.app.state.read_session_factory, get_blinding_cache(request.app)
    refresh = f"{request.url.path}?fresh=1"

    def render(session: Session, study: Study) -> str:
        made = blinding.panel(
            session=session, study=study, storage=storage, cache=cache, fresh=fresh
        )
        return templates.get_template("dashboard/_blinding.html").render(
            p=made, charts=charts, refresh_url=refresh
        )

    html = await bulkhead.in_analysis_lane(request, _with_study, factory, study.id, render)
    return HTMLResponse(html, headers=NO_STORE)


def get_blinding_cache(app: Any) -> blinding.BlindingCache:
    """The blinding audits of `app` (created on first use)."""
    with _cache_lock:
        cache = getattr(app.state, "blinding_cache", None)
        if cache is None:
            cache = app.state.blinding_cache = blinding.BlindingCache()
        return cache


@router.get("/studies/{slug}/dashboard/events")
async def dashboard_events(
    request: Request, study: StudyDep, filters: FiltersDep
) -> StreamingResponse:
    """Server-sent events: `summary` with the re-rendered live part whenever it changes."""
    factory = request.app.state.read_session_factory
    cache = get_cache(request)
    stream = _events(request, factory=factory, study_id=study.id, filters=filters, cache=cache)
    headers = {**NO_STORE, "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


def _with_study(factory: sessionmaker[Session], study_id: int, fn: Any) -> Any:
    """`fn(session, study)` in a session of its own, with the route's study (found by StudyDep)
    loaded again by id; raises StudyNotFoundError (404) if it was deleted meanwhile."""
    with factory() as session:
        return fn(session, studies_service.get_by_id(session=session, study_id=study_id))


async def _events(
    request: Request,
    *,
    factory: sessionmaker[Session],
    study_id: int,
    filters: Filters,
    cache: service.DashboardCache,
) -> AsyncIterator[str]:
    def token(session: Session, study: Study) -> Any:
        return service.change_token(session=session, study=study)

    def summary(session: Session, study: Study) -> tuple[Any, str]:
        d = service.live(session=session, study=study, filters=filters, cache=cache)
        return d.generated_at, render_live(d)

    yield "retry: 2000\n\n"
    started = last_sent = time.monotonic()
    last_token = last_generated = None
    while time.monotonic() - started < STREAM_SECONDS and not await request.is_disconnected():
        current = await anyio.to_thread.run_sync(_with_study, factory, study_id, token)
        if current != last_token:
            generated, html = await anyio.to_thread.run_sync(
                _with_study, factory, study_id, summary
            )
            if generated != last_generated:
                yield sse_event("summary", html)
                last_sent, last_generated = time.monotonic(), generated
            last_token = current
        elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await anyio.sleep(service.POLL_SECONDS)


def sse_event(event: str, data: str) -> str:
    """One event; every line of `data` becomes a `data:` line (the browser joins them)."""
    lines = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    return f"event: {event}\n{lines}\n"
