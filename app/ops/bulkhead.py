"""Bounded concurrency per class of work: a flood of one kind of request cannot take the threads,
database connections or locks that the others need.

Each request is put in a class by its path: an evaluator's session (next pair, answers), what
anyone with a study link can ask (pages, rules, joining), media, admin pages, analysis (exports,
reports, summaries, robustness) and event streams. A class admits at most its limit of requests
at once in this process; one more is answered at once with 503 and `Retry-After`, instead of
queueing on a thread, a pooled connection or the database's write lock, where it would delay
everyone else. Limits are per process and small multiples of the threads that serve the class,
so the wait of an admitted request stays short.

Exports, the HTML report, summaries and the robustness panel also run their database and
statistics work on a thread pool of their own (`analysis_lane`), so a burst of them leaves the
shared threads to evaluators and admin pages.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.ops import metrics
from app.ops.security import refusal

T = TypeVar("T")
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class WorkClass:
    name: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: any method


def _classes() -> list[WorkClass]:
    """In match order: the first whose pattern and method match takes the request."""
    r = r"/r/[^/]+"
    return [
        WorkClass("media", re.compile(rf"{r}/media/.*"), None),
        # An evaluator's session: next pair and answers (refused before any thread or database
        # without a valid evaluator token, app/rating/api.py).
        WorkClass("evaluator_session", re.compile(rf"{r}/api/(next|trials/[^/]+/votes)"), None),
        # What anyone with a study link can ask: pages, the study's rules, joining.
        WorkClass("evaluator_public", re.compile(rf"{r}(/.*)?"), None),
        WorkClass(
            "analysis",
            re.compile(r"/admin/studies/[^/]+/(export/.*|dashboard/advanced)"),
            None,
        ),
        WorkClass("events", re.compile(r"/admin/studies/[^/]+/dashboard/events"), None),
        WorkClass("admin", re.compile(r"/admin(/.*)?"), None),
    ]


def limits(settings: Settings) -> dict[str, int]:
    return {
        "media": settings.concurrency_media,
        "evaluator_session": settings.concurrency_evaluator_session,
        "evaluator_public": settings.concurrency_evaluator_public,
        "analysis": settings.concurrency_analysis,
        "events": settings.concurrency_events,
        "admin": settings.concurrency_admin,
    }


class BulkheadMiddleware:
    """503 + Retry-After for a request whose class is at its limit (see module doc)."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.classes = _classes()
        self.limits = limits(settings)
        self.in_flight = dict.fromkeys(self.limits, 0)  # the event loop is the only writer

    def classify(self, path: str, method: str) -> str | None:
        for work in self.classes:
            if (work.methods is None or method in work.methods) and work.pattern.fullmatch(path):
                return work.name
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = self.classify(scope.get("path", ""), scope.get("method", "GET"))
        if name is None:
            await self.app(scope, receive, send)
            return
        if self.in_flight[name] >= self.limits[name]:
            metrics.record_overloaded(name)
            await _busy(scope.get("path", ""))(scope, receive, send)
            return
        self.in_flight[name] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[name] -= 1


def _busy(path: str) -> Response:
    return refusal(
        status_code=503,
        code="busy",
        title="One moment",
        message=f"The server is busy: please try again in {RETRY_AFTER_SECONDS} s.",
        advice="This page retries by itself.",
        retry_after=RETRY_AFTER_SECONDS,
        json="/api/" in path or "/export/" in path,
        refresh=True,
    )


# --- the analysis lane ------------------------------------------------------------------------


def analysis_lane(request: Request) -> anyio.CapacityLimiter | None:
    """The lane's limiter (set at start-up; None before it, e.g. an app never started: then the
    shared pool)."""
    return getattr(request.app.state, "analysis_lane", None)


async def in_analysis_lane(request: Request, function: Callable[..., T], *args: Any) -> T:
    """Run heavy read-only work (exports, report, summaries, robustness) on its own threads."""
    return await anyio.to_thread.run_sync(partial(function, *args), limiter=analysis_lane(request))


def _next_chunk(chunks: Iterator[str]) -> str | None:
    return next(chunks, None)


async def iterate_in_lane(
    limiter: anyio.CapacityLimiter | None, chunks: Iterator[str]
) -> AsyncIterator[str]:
    """A sync iterator (a streaming export) pulled on the lane's threads, one chunk at a time;
    closed on the lane too when the client goes away."""
    try:
        while True:
            # None marks the end: chunks are strings, never None.
            chunk = await anyio.to_thread.run_sync(_next_chunk, chunks, limiter=limiter)
            if chunk is None:
                return
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close, limiter=limiter)
