"""Prometheus metrics: request latency by route template, trials, votes, renders; `GET /metrics`.

Two kinds of numbers, on purpose:

- **Counters and histograms** kept by each process (`vidarena_http_request_duration_seconds`,
  `vidarena_votes_total`, `vidarena_trials_total`, `vidarena_renders_total`, …). Votes, trials
  and evaluators are counted by SQLAlchemy session hooks (`install_orm_hooks`) when a
  transaction that inserted them *commits*, so the rating code needs no calls and a rolled-back
  submission counts nothing. Other code may call `record_vote(n)`, `record_trial(event)`,
  `record_render(status, arm_kind, seconds)` directly.
- **Gauges read from SQL at scrape time** (`vidarena_clips{status}`, `vidarena_votes_stored`,
  `vidarena_trials_answered`, `vidarena_evaluators`): the truth across every process and
  restart, and the queue depth of the render farm.

With several uvicorn workers set `PROMETHEUS_MULTIPROC_DIR` to an empty folder before they start
(docker-compose.yml does): every process then writes its samples there and any of them answers
a scrape with the sum. Render workers expose their own counters on
`VIDARENA_WORKER_METRICS_PORT` (`start_worker_server`).

`/metrics` wants `Authorization: Bearer $VIDARENA_METRICS_TOKEN` when that is set; without a
token it is open in development and test, and refused in production.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine, column, event, func, select, table
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import WRITE_LOCK_HOLDS, WRITE_LOCK_SECONDS
from app.ops.logging import reveal, route_template

log = logging.getLogger(__name__)
# `*_created` series double the output and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
REGISTRY = CollectorRegistry(auto_describe=True)
REGISTRY.register(WRITE_LOCK_SECONDS)
REGISTRY.register(WRITE_LOCK_HOLDS)

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RENDER_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)

HTTP_LATENCY = Histogram(
    "vidarena_http_request_duration_seconds",
    "HTTP request latency by method and route template (server-sent event streams: until "
    "the response starts).",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "vidarena_http_requests",
    "HTTP responses by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
TRIALS = Counter(
    "vidarena_trials",
    "Trials committed: `assigned` (a pair given to an evaluator) and `answered`.",
    ["event"],
    registry=REGISTRY,
)
VOTES = Counter("vidarena_votes", "Votes committed (one per criterion).", registry=REGISTRY)
EVALUATORS = Counter(
    "vidarena_evaluators_joined", "Evaluators enrolled (new, not resumed).", registry=REGISTRY
)
RENDERS = Counter(
    "vidarena_renders",
    "Render task outcomes (done, failed, retry, skipped, aborted) by arm kind.",
    ["status", "arm_kind"],
    registry=REGISTRY,
)
RENDER_SECONDS = Histogram(
    "vidarena_render_seconds",
    "Wall seconds of render tasks, by arm kind and outcome.",
    ["arm_kind", "status"],
    buckets=RENDER_BUCKETS,
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "vidarena_rate_limited",
    "Requests refused with 429 by the join/submit rate limits, by rule.",
    ["rule"],
    registry=REGISTRY,
)
RATE_LIMIT_FAILED_OPEN = Counter(
    "vidarena_rate_limit_failed_open",
    "Joins and submits let through unchecked because the shared rate-limit storage (Redis) did "
    "not answer, by rule.",
    ["rule"],
    registry=REGISTRY,
)
OVERLOADED = Counter(
    "vidarena_overloaded",
    "Requests answered 503 because their class of work was at its concurrency limit.",
    ["work"],
    registry=REGISTRY,
)
QUEUE_UNAVAILABLE = Counter(
    "vidarena_queue_unavailable",
    "Render queueing attempts refused because the broker was unreachable.",
    registry=REGISTRY,
)


# --- helpers other modules call -------------------------------------------------------------


def record_vote(n: int = 1) -> None:
    if n > 0:
        VOTES.inc(n)


def record_trial(event: str = "answered", n: int = 1) -> None:
    if n > 0:
        TRIALS.labels(event=event).inc(n)


def record_evaluator(n: int = 1) -> None:
    if n > 0:
        EVALUATORS.inc(n)


def record_render(status: str, arm_kind: str, seconds: float | None = None) -> None:
    arm_kind = arm_kind or "unknown"
    RENDERS.labels(status=status, arm_kind=arm_kind).inc()
    if seconds is not None:
        RENDER_SECONDS.labels(arm_kind=arm_kind, status=status).observe(seconds)


def record_rate_limited(rule: str) -> None:
    RATE_LIMITED.labels(rule=rule).inc()


def record_rate_limit_failed_open(rule: str) -> None:
    RATE_LIMIT_FAILED_OPEN.labels(rule=rule).inc()


def record_overloaded(work: str) -> None:
    OVERLOADED.labels(work=work).inc()


def record_queue_unavailable() -> None:
    QUEUE_UNAVAILABLE.inc()


# --- counting committed rows ----------------------------------------------------------------

_INFO_KEY = "vidarena_metrics"
_hooks_lock = threading.Lock()
_hooks_installed = False


def install_orm_hooks() -> None:
    """Count votes, trials and evaluators when the transaction inserting them commits."""
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        from sqlalchemy import inspect

        @event.listens_for(Session, "after_flush")
        def _tally(session: Session, _context: Any) -> None:
            tally: Tally[str] = session.info.setdefault(_INFO_KEY, Tally())
            for obj in session.new:
                table = _table_of(obj)
                if table == "vote":
                    tally["votes"] += 1
                elif table == "trial":
                    tally["assigned"] += 1
                    if obj.answered_at is not None:
                        tally["answered"] += 1
                elif table == "evaluator":
                    tally["evaluators"] += 1
            for obj in session.dirty:
                if _table_of(obj) == "trial":
                    history = inspect(obj).attrs.answered_at.history
                    was_open = not history.deleted or history.deleted[0] is None
                    if history.added and history.added[0] is not None and was_open:
                        tally["answered"] += 1

        @event.listens_for(Session, "after_commit")
        def _record(session: Session) -> None:
            tally = session.info.pop(_INFO_KEY, None)
            if tally:
                record_vote(tally["votes"])
                record_trial("assigned", tally["assigned"])
                record_trial("answered", tally["answered"])
                record_evaluator(tally["evaluators"])

        @event.listens_for(Session, "after_rollback")
        def _forget(session: Session) -> None:
            session.info.pop(_INFO_KEY, None)

        _hooks_installed = True


def _table_of(obj: object) -> str | None:
    # By table name, the one glossary shared with the database: this platform module sits below
    # the domains and imports none of their models.
    table = getattr(type(obj), "__table__", None)
    return getattr(table, "name", None)


def count_on_commit(session: Session, **counts: int) -> None:
    """Count writes made with plain INSERT/UPDATE statements (which the flush hook does not
    see) when their transaction commits: votes=, assigned=, answered=, evaluators=."""
    if _hooks_installed:
        tally: Tally[str] = session.info.setdefault(_INFO_KEY, Tally())
        tally.update(counts)


# --- gauges read from SQL at scrape time ----------------------------------------------------


# Lightweight table constructs (names shared with the database), not the domain models: this
# platform module sits below the domains.
_CLIP = table("clip", column("status"))
_VOTE = table("vote")
_TRIAL = table("trial", column("answered_at"))
_EVALUATOR = table("evaluator")


class SqlCollector:
    """Clips by status, stored votes, answered trials and evaluators, straight from SQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine.execution_options(sqlite_begin="DEFERRED")

    def describe(self) -> list[Any]:
        return []  # never query the database at registration time

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily("vidarena_sql_metrics_up", "1 when the SQL gauges could be read.")
        try:
            started = time.perf_counter()
            with self.engine.connect() as conn:
                clips = conn.execute(
                    select(_CLIP.c.status, func.count()).group_by(_CLIP.c.status)
                ).all()
                votes = conn.execute(select(func.count()).select_from(_VOTE)).scalar_one()
                answered = conn.execute(select(func.count(_TRIAL.c.answered_at))).scalar_one()
                evaluators = conn.execute(select(func.count()).select_from(_EVALUATOR)).scalar_one()
            seconds = time.perf_counter() - started
        except Exception as exc:
            log.warning("SQL gauges unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_status = GaugeMetricFamily(
            "vidarena_clips",
            "Clips by render status (queued = the render backlog).",
            labels=["status"],
        )
        for status, count in clips:
            by_status.add_metric([getattr(status, "value", str(status))], count)
        yield by_status
        for name, doc, value in (
            ("vidarena_votes_stored", "Votes stored in SQL.", votes),
            ("vidarena_trials_answered", "Answered trials stored in SQL.", answered),
            ("vidarena_evaluators", "Evaluators stored in SQL.", evaluators),
            ("vidarena_sql_metrics_seconds", "Seconds the SQL gauges took to read.", seconds),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


def exposition(engine: Engine | None) -> bytes:
    """The text exposition: this process's (or every process's) metrics, then the SQL gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client: unannotated
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if engine is not None:
        sql = CollectorRegistry(auto_describe=False)
        sql.register(SqlCollector(engine))
        body += generate_latest(sql)
    return body


# --- the endpoint ---------------------------------------------------------------------------

router = APIRouter(tags=["ops"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    settings = request.app.state.settings
    headers = {"Cache-Control": "no-store"}
    token = reveal(settings.metrics_token)
    if token:  # an empty VIDARENA_METRICS_TOKEN= counts as unset, never as "any token"
        expected = f"Bearer {token}".encode()
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return PlainTextResponse(
                "metrics need Authorization: Bearer <VIDARENA_METRICS_TOKEN>\n",
                status_code=401,
                headers={**headers, "WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    elif settings.env == "production":
        return PlainTextResponse(
            "metrics are off: set VIDARENA_METRICS_TOKEN and scrape with that bearer token\n",
            status_code=403,
            headers=headers,
        )
    body = exposition(request.app.state.engine)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers=headers)


class MetricsMiddleware:
    """Times every HTTP request and labels it with its route template (bounded cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        observed = False

        def observe() -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            method, route = scope["method"], route_template(scope)
            HTTP_LATENCY.labels(method=method, route=route).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name == b"content-type" and value.startswith(b"text/event-stream"):
                        observe()  # a stream lasts minutes: time it to its first byte
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                observe()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            observe()


# --- render workers -------------------------------------------------------------------------


def start_worker_server(port: int) -> bool:
    """Serve this worker process's metrics on `port` (a daemon thread); False when off."""
    if port <= 0:
        return False
    from prometheus_client import start_http_server

    start_http_server(port, registry=REGISTRY)
    log.info("render worker metrics on :%d/metrics", port)
    return True
