"""Bounded concurrency per class of work (app/ops/bulkhead.py), in process: which class each
route belongs to, and the answer past a class's limit. The flood itself is tests/test_flood.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.ops import bulkhead
from tests.kit.config import configured


@pytest.mark.parametrize(
    ("method", "path", "work"),
    [
        ("GET", "/r/KEY/media/TOKEN", "media"),
        ("GET", "/r/KEY/api/next", "evaluator_session"),
        ("POST", "/r/KEY/api/trials/7/votes", "evaluator_session"),
        ("POST", "/r/KEY/api/join", "evaluator_public"),
        ("POST", "/r/KEY/join", "evaluator_public"),
        ("GET", "/r/KEY", "evaluator_public"),
        ("GET", "/r/KEY/api/study", "evaluator_public"),
        ("GET", "/admin/studies/s/export/votes.csv", "analysis"),
        ("GET", "/admin/studies/s/dashboard/advanced", "analysis"),
        ("GET", "/admin/studies/s/dashboard/events", "events"),
        ("GET", "/admin/studies/s/dashboard", "admin"),
        ("POST", "/admin/login", "admin"),
        ("GET", "/healthz", None),
        ("GET", "/static/rate.js", None),
    ],
)
def test_every_route_has_its_class(settings, method, path, work):
    middleware = bulkhead.BulkheadMiddleware(app=None, settings=settings)
    assert middleware.classify(path, method) == work


def test_past_its_limit_a_class_answers_503_at_once_and_frees_its_places(settings):
    release = asyncio.Event()
    entered = []

    async def slow_app(scope, receive, send):  # type: ignore[no-untyped-def]
        entered.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = configured(settings, concurrency_analysis=2)
    middleware = bulkhead.BulkheadMiddleware(app=slow_app, settings=limited)

    async def call(path: str) -> tuple[int, dict[str, str]]:
        sent: list[dict] = []

        async def send(message):  # type: ignore[no-untyped-def]
            sent.append(message)

        async def receive():  # type: ignore[no-untyped-def]
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "method": "GET", "path": path, "headers": []}
        await middleware(scope, receive, send)
        start = sent[0]
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], headers

    async def scenario() -> None:
        path = "/admin/studies/s/export/votes.csv"
        first = [asyncio.create_task(call(path)) for _ in range(2)]
        while len(entered) < 2:  # both admitted and inside the app
            await asyncio.sleep(0.001)
        status, headers = await asyncio.wait_for(call(path), timeout=1)  # answered at once
        assert status == 503 and headers["retry-after"] == "1"
        assert headers["cache-control"] == "no-store"
        # Other classes are not affected by this one being full.
        other = asyncio.create_task(call("/admin/studies/s"))
        release.set()
        assert [(await t)[0] for t in first] == [200, 200]
        assert (await other)[0] == 200
        assert middleware.in_flight["analysis"] == 0  # places given back
        assert (await call(path))[0] == 200

    # A loop of its own on a thread of its own: the browser tests' Playwright may already run
    # one on this thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result(timeout=60)
    assert len(entered) == 4
