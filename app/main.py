"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__, ops
from app.auth import router as auth_router
from app.auth import service as auth_service
from app.auth import web as auth_web
from app.auth.deps import assert_admin_routes_protected
from app.clips import router as clips_router
from app.config import Settings, get_settings
from app.dashboard import router as dashboard_router
from app.dashboard import stopping
from app.db import get_engine, session_factory
from app.exports import router as exports_router
from app.rating import admin as rating_admin
from app.rating import api as rating_api
from app.rating import router as rating_router
from app.rating import tokens, twins
from app.rating.errors import RatingError
from app.rating.media import MediaCache
from app.storage import get_storage
from app.studies import router as studies_router
from app.studies.service import StudyNotFoundError
from app.web import errors, limits
from app.web.pages import FAVICON, STATIC_DIR, templates

log = logging.getLogger(__name__)
EVALUATOR_BODY_LIMIT = 64 * 1024
FAVICON_CACHE = {"Cache-Control": "public, max-age=86400"}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Sync endpoints run in anyio's thread pool (40 threads by default). Under load those threads
    # convoy on the GIL: each SQLite call releases it and waits up to the 5 ms switch interval to
    # get it back, while holding the database's write lock. A few threads serve as many requests
    # (they queue on the event loop instead) and keep critical sections short.
    anyio.to_thread.current_default_thread_limiter().total_tokens = app.state.settings.web_threads
    app.state.rating_lane = anyio.CapacityLimiter(app.state.settings.rating_threads)
    app.state.analysis_lane = anyio.CapacityLimiter(app.state.settings.analysis_threads)
    async with anyio.create_task_group() as tasks:
        if app.state.settings.stop_check_seconds > 0:
            tasks.start_soon(_check_stops, app)
            tasks.start_soon(_make_gold_twins, app)
        yield
        tasks.cancel_scope.cancel()


async def _check_stops(app: FastAPI) -> None:
    """Stop studies whose plan is decided (app/dashboard/stopping.py), on the analysis lane, every
    VIDARENA_STOP_CHECK_SECONDS; a failed check is logged and tried again next time."""
    while True:
        await anyio.sleep(app.state.settings.stop_check_seconds)
        try:
            await anyio.to_thread.run_sync(
                partial(
                    stopping.check_studies,
                    read=app.state.read_session_factory,
                    write=app.state.session_factory,
                    cache=dashboard_router.get_app_cache(app),
                ),
                limiter=app.state.analysis_lane,
            )
        except Exception:
            log.warning("stop check failed; trying again later", exc_info=True)


async def _make_gold_twins(app: FastAPI) -> None:
    """Make the gold twins the open studies with gold pairs lack (app/rating/twins.py), on the
    analysis lane, every VIDARENA_STOP_CHECK_SECONDS: never in a request. A failed pass is
    logged and tried again next time."""
    while True:
        await anyio.sleep(app.state.settings.stop_check_seconds)
        try:
            storage = getattr(app.state, "storage", None)
            if storage is None:
                storage = app.state.storage = get_storage(app.state.settings)
            await anyio.to_thread.run_sync(
                partial(twins.make_due, session_factory=app.state.session_factory, storage=storage),
                limiter=app.state.analysis_lane,
            )
        except Exception:
            log.warning("gold twins failed; trying again later", exc_info=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # API docs: Swagger UI and ReDoc load their scripts from a CDN, so they (and the schema
    # they read) are off in production unless VIDARENA_API_DOCS turns them on.
    docs = settings.api_docs_enabled
    app = FastAPI(
        title="vidarena",
        version=__version__,
        lifespan=_lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    engine = get_engine(settings)
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.read_session_factory = session_factory(engine, read_only=True)
    app.state.media_cache = MediaCache(max_bytes=settings.media_cache_mb * 2**20)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Added first, so it runs inside the session middleware (its 413 page shows the session).
    app.add_middleware(
        limits.BodyLimitMiddleware,
        max_bytes=studies_router.UPLOAD_BODY_LIMIT,
        path_prefix="/admin/",
    )
    # Evaluator requests are small JSON or forms: refuse big bodies before reading them.
    app.add_middleware(
        limits.BodyLimitMiddleware, max_bytes=EVALUATOR_BODY_LIMIT, path_prefix="/r/"
    )
    app.add_middleware(
        auth_web.AdminSessionMiddleware, **auth_service.session_cookie_options(settings)
    )
    # Request ids, metrics, security headers, rate limits (outside the session), /healthz,
    # /readyz and /metrics.
    ops.install(app, settings, evaluator_cookie=tokens.EVALUATOR_COOKIE)
    app.state.login_throttle = auth_service.LoginThrottle()
    auth_web.install_template_globals(templates.env)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_page)
    app.add_exception_handler(RequestValidationError, errors.request_validation_error)
    app.add_exception_handler(RatingError, errors.rating_error)
    app.add_exception_handler(StudyNotFoundError, errors.study_not_found)

    # Evaluator routes first: the busiest, and routes are matched in order.
    app.include_router(rating_api.router)
    app.include_router(rating_router.media_router)
    app.include_router(rating_router.router)
    app.include_router(auth_router.login_router)
    app.include_router(auth_router.router)
    app.include_router(studies_router.router)
    app.include_router(clips_router.router)
    app.include_router(rating_admin.router)
    app.include_router(dashboard_router.router)
    app.include_router(exports_router.router)
    _add_root_routes(app)
    # Keep last: start-up fails if any /admin route skips require_admin / verify_csrf.
    assert_admin_routes_protected(app)
    return app


def _add_root_routes(app: FastAPI) -> None:
    """`/` leads to the admin (evaluators only ever get /r/ links); browsers that ask for
    /favicon.ico get the SVG the pages link to instead of a 404 in every log."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/admin/", status_code=303)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(FAVICON, media_type="image/svg+xml", headers=FAVICON_CACHE)
