"""Liveness (`GET /healthz`) and readiness (`GET /readyz`: database, broker, storage).

`/healthz` answers 200 while the process serves requests and touches nothing else: use it for
restart decisions (a database outage must not make an orchestrator restart every web process).
`/readyz` checks each component in parallel, each within `CHECK_TIMEOUT_S`, and answers 200 when
all are up, else 503; either way with one entry per component:

    {"status": "down",
     "components": {"database": {"status": "ok", "backend": "postgresql", "latency_ms": 1.3},
                    "broker": {"status": "down", "backend": "redis", "latency_ms": 0.4,
                               "error": "ConnectionError: Error 111 connecting to redis:6379."},
                    "storage": {"status": "ok", "backend": "s3", "latency_ms": 6.2}}}

Use it for load-balancer membership. Error texts go through the log redactor (no passwords).
While the broker is down the site still serves evaluators, dashboards and exports; only render
queueing answers 503, so a load balancer that must keep serving evaluators during a broker
outage should probe `/readyz?require=database,storage`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from app import __version__
from app.broker import broker_options
from app.config import Settings
from app.ops.logging import redact

CHECK_TIMEOUT_S = 3.0
COMPONENTS = ("database", "broker", "storage")
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter(tags=["ops"])


class NotReadyError(Exception):
    """A component answered, but is not usable (schema behind, folder not writable)."""


# --- the checks (blocking; run in threads) ---------------------------------------------------


def check_database(engine: Engine, state: dict[str, Any]) -> str:
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
        conn.execute(text("SELECT 1"))
    if not state.get("schema_at_head"):
        from app.db import pending_migrations

        pending = pending_migrations(engine)
        if pending:
            raise NotReadyError(
                f"the schema needs migrations {', '.join(pending)}: run `vidarena db upgrade`"
            )
        state["schema_at_head"] = True  # migrations only move forward while we run
    return engine.dialect.name


def check_broker(settings: Settings) -> str:
    url = settings.broker_url
    if url.startswith("filesystem://"):
        _, options = broker_options(url)
        folder = Path(str(options["data_folder_in"]))
        with tempfile.TemporaryFile(dir=folder):
            pass
        return "filesystem"
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S
        )
        try:
            client.ping()
        finally:
            client.close()
        return "redis"
    from kombu import Connection

    with Connection(url, connect_timeout=CHECK_TIMEOUT_S) as conn:
        conn.ensure_connection(max_retries=1)
    return url.split("://", 1)[0]


def check_storage(settings: Settings, state: dict[str, Any]) -> str:
    from app.storage import S3Storage, get_storage

    storage = state.get("storage")
    if storage is None:
        storage = state["storage"] = get_storage(settings)
        if isinstance(storage, S3Storage):
            # One quick try: the probe reports, it does not wait out an outage.
            storage._max_attempts = 1
            storage._timeouts = (CHECK_TIMEOUT_S, CHECK_TIMEOUT_S)
    storage.check()
    return "s3" if isinstance(storage, S3Storage) else "local"


# --- running them ---------------------------------------------------------------------------


async def _run(name: str, check: Callable[[], str]) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"status": "ok"}
    try:
        backend = await asyncio.wait_for(asyncio.to_thread(check), timeout=CHECK_TIMEOUT_S)
        result["backend"] = backend
    except TimeoutError:
        result["status"] = "down"
        result["error"] = f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:
        result["status"] = "down"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result["error"] = redact(f"{type(exc).__name__}: {message}"[:500])
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


async def readiness(request: Request, components: tuple[str, ...] = COMPONENTS) -> dict[str, Any]:
    app_state = request.app.state
    settings: Settings = app_state.settings
    state: dict[str, Any] = getattr(app_state, "ops_health", None) or {}
    app_state.ops_health = state
    checks: dict[str, Callable[[], str]] = {
        "database": lambda: check_database(app_state.engine, state),
        "broker": lambda: check_broker(settings),
        "storage": lambda: check_storage(settings, state),
    }
    results = await asyncio.gather(*(_run(name, checks[name]) for name in components))
    report = dict(zip(components, results, strict=True))
    ok = all(r["status"] == "ok" for r in report.values())
    return {"status": "ok" if ok else "down", "components": report}


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> JSONResponse:
    return JSONResponse(
        {"status": "ok", "version": __version__, "pid": os.getpid()}, headers=NO_STORE
    )


@router.get("/readyz", summary="Readiness: database, broker and storage reachable")
async def readyz(request: Request, require: str | None = None) -> JSONResponse:
    """200 when every component (or every one named in `require`, comma-separated) is up."""
    components: tuple[str, ...] = COMPONENTS
    if require:
        wanted = tuple(dict.fromkeys(p.strip() for p in require.split(",") if p.strip()))
        unknown = [c for c in wanted if c not in COMPONENTS]
        if unknown or not wanted:
            return JSONResponse(
                {"detail": f"unknown component(s) {unknown}; choose from {list(COMPONENTS)}"},
                status_code=422,
                headers=NO_STORE,
            )
        components = wanted
    report = await readiness(request, components)
    return JSONResponse(
        report, status_code=200 if report["status"] == "ok" else 503, headers=NO_STORE
    )
