"""The simulated evaluators' HTTP client (aiohttp, keep-alive, no cookie jar) and the timing of
each request, retried after a 503 like the rating page (static/rate.js)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.load.stats import Stats


class RequestFailedError(Exception):
    pass


@dataclass
class Reply:
    status_code: int
    content: bytes
    retry_after: str | None = None

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """A keep-alive HTTP client for the simulated evaluators: aiohttp (its C parser costs a
    fraction of httpx's CPU per request, and the load generator shares the server's 2 cores).
    No cookie jar: each evaluator is its bearer token; a shared jar would hand one evaluator's
    cookie to all."""

    def __init__(self, base_url: str, *, connections: int, timeout: float) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=connections,
            keepalive_timeout=2.0,  # well under uvicorn's 5 s: never reuse one it is closing
        )
        self.session = aiohttp.ClientSession(
            base_url=base_url,
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def request(self, method: str, url: str, **kwargs: Any) -> Reply:
        async with self.session.request(method, url, **kwargs) as response:
            return Reply(
                response.status, await response.read(), response.headers.get("Retry-After")
            )

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


BUSY_RETRIES = 5  # as static/rate.js: a 503 (a full class of work) is waited out, then retried


async def timed(stats: Stats, what: str, call) -> Any:  # type: ignore[no-untyped-def]
    """`call()` (a coroutine function) timed from the first try to the answer, retried like the
    rating page after a 503 with Retry-After (each one counted in `stats.busy`)."""
    started = time.perf_counter()
    for attempt in range(BUSY_RETRIES + 1):
        try:
            response = await call()
        except Exception as exc:
            stats.error(what, f"{type(exc).__name__}: {exc}")
            raise RequestFailedError(what) from exc
        if response.status_code != 503 or attempt == BUSY_RETRIES:
            break
        stats.busy[what] += 1
        await asyncio.sleep(float(response.retry_after or 1) * (1 + random.random()))
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        stats.error(what, f"{response.status_code} {response.text}")
        raise RequestFailedError(what)
    stats.latencies[what].append(elapsed)
    return response


def run_async(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
