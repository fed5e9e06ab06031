"""Operations: health and readiness, Prometheus metrics, structured logs, security headers and
rate limits, bounded concurrency. `install(app, settings, ...)` wires them into the app. A platform
layer: it imports no domain package (the app passes in what it needs, e.g. the cookie name).

    health.py    GET /healthz (liveness), GET /readyz (database, broker, storage; 503 when down)
    metrics.py   GET /metrics, request latency by route, trials/votes/renders counters
    logging.py   JSON logs with request ids (X-Request-ID) and task ids, secrets redacted
    security.py  CSP and other headers, HSTS behind HTTPS, join/submit rate limits
    bulkhead.py  bounded concurrency per class of work (503 + Retry-After), the analysis lane
    gpuslot.py   pins a scaled GPU worker container to a GPU of its own
"""

from __future__ import annotations

from fastapi import FastAPI

from app.config import Settings


def install(app: FastAPI, settings: Settings, *, evaluator_cookie: str) -> None:
    """Middleware and routes. Call after the session middleware is added: what is added later
    runs first, so request ids, metrics and headers cover every response, 429s included."""
    from app.ops import bulkhead, health, metrics, security
    from app.ops.logging import RequestContextMiddleware, configure_logging

    configure_logging(settings)
    metrics.install_orm_hooks()
    app.add_middleware(bulkhead.BulkheadMiddleware, settings=settings)
    app.add_middleware(
        security.RateLimitMiddleware, settings=settings, evaluator_cookie=evaluator_cookie
    )
    app.add_middleware(security.SecurityHeadersMiddleware, settings=settings)
    app.add_middleware(metrics.MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(metrics.router)
