"""Security headers on every response, and rate limits on joining and submitting.

Headers (added unless the route already set the same header):
- `Content-Security-Policy`: scripts and stylesheets from this origin only (no inline script,
  no eval, no <style> element; style attributes are allowed, see below), media from this origin
  (plus the S3 endpoint when storage is S3), `frame-ancestors 'none'`, `object-src 'none'`,
  `base-uri 'none'`, `form-action 'self'`.
  FastAPI's `/docs` and `/redoc` pages load Swagger UI / ReDoc from a CDN with an inline
  script: where they are served (VIDARENA_API_DOCS; by default not in production) those three
  paths get a looser policy of their own. Otherwise no policy names a CDN.
- `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`,
  `Permissions-Policy` (no camera, microphone, geolocation…), `Cross-Origin-Opener-Policy`.
- `Strict-Transport-Security` when `VIDARENA_HTTPS_ONLY` is set (with Secure cookies).
- `Cache-Control: no-store` on everything under /admin (pages carry CSRF tokens and data).

Rate limits on joining (keyed by client address, as uvicorn's proxy-header handling reports it)
and on submitting votes (keyed by study and evaluator token, the client address when there is
none); refusals are 429 with `Retry-After` (`refusal`). Where the budgets live is
`VIDARENA_RATE_LIMIT_STORAGE` (`Settings.rate_limit_storage_url`):

- `memory://` (the embedded default): a token bucket per key in this process's memory. A bucket
  holds `per_minute` tokens and refills at `per_minute / 60` per second, so a burst of that size
  passes and then one request per `60 / per_minute` seconds. O(1) per request, two floats per key,
  LRU-bounded, no background thread. With several web processes each keeps its own buckets (the
  effective limit is N times the setting).
- `redis://…`: one budget shared by every web process and machine, kept by the `limits` library
  (its moving-window strategy on its asyncio Redis storage, one Lua call per request): at most
  `per_minute` requests per key in any 60 seconds; `Retry-After` is when the oldest of them leaves
  the window. Redis failing must not take evaluators down with it: a request whose check fails
  (refused connection, no answer within `STORAGE_TIMEOUT`) is let through unchecked (fail open),
  counted in `vidarena_rate_limit_failed_open_total{rule}` and logged once per `WARN_EVERY`; for
  `PAUSE_AFTER_FAILURE` after a failure requests pass without asking Redis, so an outage costs at
  most one timeout per pause, not one per request.

Why not limits' in-process `MemoryStorage` for the embedded default too: it sweeps every key from
a timer thread started every 10 ms while any key is live (the asyncio one hops to a worker thread
per key per sweep), about 7 % of a core at 50 requests/s over 1,000 keys against 0.4 % for the
bucket, in web processes that measure their latency in GIL hand-offs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.ops import metrics

if TYPE_CHECKING:  # imported where used: the embedded default never loads them
    from limits import RateLimitItem
    from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

HSTS = "max-age=31536000"
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def content_security_policy(settings: Settings) -> str:
    media = ["'self'", "data:", "blob:"]
    if settings.storage_url.strip().startswith("s3://"):
        # Presigned S3 URLs, should a page ever link one directly.
        endpoint = urlsplit(settings.s3_endpoint_url or "")
        media.append(
            f"{endpoint.scheme}://{endpoint.netloc}"
            if endpoint.netloc
            else "https://*.amazonaws.com"
        )
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        # Stylesheets from this origin only, no <style> elements; style *attributes* are allowed:
        # the dashboard's HTML/CSS charts position every bar with style="left:…;width:…" (and the
        # invite list sets one). Scripts stay strict. Charts drawn as SVG geometry attributes
        # (x=, width=) would let this line go.
        "style-src 'self'",
        "style-src-elem 'self'",
        "style-src-attr 'unsafe-inline'",
        f"img-src {' '.join(media)}",
        f"media-src {' '.join(media)}",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    if settings.https_only:
        directives.append("upgrade-insecure-requests")
    return "; ".join(directives)


def security_headers(settings: Settings) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if settings.https_only:
        headers["Strict-Transport-Security"] = HSTS
    return headers


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.headers = list(security_headers(settings).items())
        self.docs_paths = DOCS_PATHS if settings.api_docs_enabled else frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        admin = path == "/admin" or path.startswith("/admin/")
        docs = path in self.docs_paths

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    if name not in headers:
                        headers[name] = (
                            DOCS_CSP if docs and name.startswith("Content-Sec") else value
                        )
                if admin and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- rate limits ----------------------------------------------------------------------------


class RateLimiter:
    """Token buckets by key: `per_minute` capacity, refilled continuously; LRU-bounded."""

    def __init__(
        self,
        *,
        per_minute: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one is available."""
        if self.capacity <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, updated = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - updated) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)  # forget the longest idle (it was ~full anyway)
        return wait


class Budget(Protocol):
    async def take(self, key: str) -> float:
        """Spend one request of `key`'s budget: 0.0 when allowed, else the seconds to wait."""
        ...


class LocalBudget:
    """A rule's budgets in this process: token buckets (`RateLimiter`)."""

    def __init__(self, per_minute: int) -> None:
        self.buckets = RateLimiter(per_minute=per_minute)

    async def take(self, key: str) -> float:
        return self.buckets.take(key)


# Connect and reply, seconds: Redis on the same network answers in well under a millisecond.
# `?socket_timeout=…&socket_connect_timeout=…` on the storage URL overrides both.
STORAGE_TIMEOUT = 0.25
# After a failed check, requests pass unchecked this long before Redis is asked again.
PAUSE_AFTER_FAILURE = 1.0
# While checks fail, one warning per this many seconds (with the count let through meanwhile).
WARN_EVERY = 60.0
# Connections per web process; a request waits (at most STORAGE_TIMEOUT) for a free one.
MAX_CONNECTIONS = 32
KEY_PREFIX = "vidarena:rate-limit"


class SharedLimits:
    """Budgets in Redis, shared by every web process that names the same storage: `limits`'
    moving window (at most `amount` hits per key in any window of its length) on its asyncio
    Redis storage (redis-py's client). Fails open: see the module docstring.

    redis-py's asyncio connections belong to the event loop that opened them, so the storage is
    made per loop (one per uvicorn process; test clients start a loop each)."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.clock = clock
        parts = urlsplit(url)  # for logs: no credentials, no query
        self.where = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._strategy: MovingWindowRateLimiter | None = None
        self._paused_until = -math.inf
        self._warned_at = -math.inf
        self._unchecked = 0
        self._failing = False
        self._error = ""

    def budget(self, rule: str, per_minute: int) -> Budget:
        from limits import RateLimitItemPerMinute

        return SharedBudget(self, rule, RateLimitItemPerMinute(per_minute))

    async def take(self, rule: str, item: RateLimitItem, key: str) -> float:
        if self.clock() < self._paused_until:
            self._failed_open(rule, None)
            return 0.0
        try:
            strategy = self._strategy_for_this_loop()
            if await strategy.hit(item, key):
                wait = 0.0
            else:
                stats = await strategy.get_window_stats(item, key)
                wait = max(stats.reset_time - time.time(), 0.001)
        except Exception as exc:  # any failure of the limiter: let the request through
            self._paused_until = self.clock() + PAUSE_AFTER_FAILURE
            self._failed_open(rule, exc)
            return 0.0
        if self._failing:
            self._failing = False
            log.warning(
                "rate-limit storage %s answers again: join and submit limits apply again "
                "(%d requests were let through unchecked meanwhile)",
                self.where,
                self._unchecked,
            )
            self._unchecked = 0
            self._warned_at = -math.inf
        return wait

    def _strategy_for_this_loop(self) -> MovingWindowRateLimiter:
        loop = asyncio.get_running_loop()
        if self._strategy is None or self._loop is not loop:
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import MovingWindowRateLimiter
            from redis.asyncio import BlockingConnectionPool

            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=STORAGE_TIMEOUT,
                socket_timeout=STORAGE_TIMEOUT,
                socket_connect_timeout=STORAGE_TIMEOUT,
            )
            # limits passes these options to redis-py's client (typed there as scalars only).
            options: dict[str, Any] = {"connection_pool": pool}
            storage = RedisStorage(
                self.url, implementation="redispy", key_prefix=KEY_PREFIX, **options
            )
            self._strategy = MovingWindowRateLimiter(storage)
            self._loop = loop
        return self._strategy

    def _failed_open(self, rule: str, error: Exception | None) -> None:
        metrics.record_rate_limit_failed_open(rule)
        self._failing = True
        self._unchecked += 1
        if error is not None:
            self._error = f"{type(error).__name__}: {error}"
        now = self.clock()
        if now - self._warned_at >= WARN_EVERY:
            log.warning(
                "rate-limit storage %s unavailable (%s): joins and submits pass unchecked until "
                "it answers (%d so far)",
                self.where,
                self._error,
                self._unchecked,
            )
            self._warned_at = now


class SharedBudget:
    """One rule's budgets in `SharedLimits`."""

    def __init__(self, limits: SharedLimits, rule: str, item: RateLimitItem) -> None:
        self.limits = limits
        self.rule = rule
        self.item = item

    async def take(self, key: str) -> float:
        return await self.limits.take(self.rule, self.item, key)


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    budget: Budget
    per_evaluator: bool


JOIN_PATH = re.compile(r"/r/(?P<key>[^/]+)/(?:api/)?join/?")
SUBMIT_PATH = re.compile(r"/r/(?P<key>[^/]+)/api/trials/[^/]+/votes/?")


class RateLimitMiddleware:
    """429 for POSTs to join and submit past their budget; everything else passes untouched. A
    limit of 0 is no rule at all: nothing is counted, no storage is asked (the load benchmark)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, evaluator_cookie: str) -> None:
        self.app = app
        self.cookie = evaluator_cookie  # the rating domain's name for it, passed in from above
        url = settings.rate_limit_storage_url
        shared = None if url.startswith("memory://") else SharedLimits(url)
        self.rules: list[Rule] = []
        for name, pattern, per_minute, per_evaluator in (
            ("join", JOIN_PATH, settings.rate_limit_join_per_minute, False),
            ("submit", SUBMIT_PATH, settings.rate_limit_submit_per_minute, True),
        ):
            if per_minute > 0:
                budget = (
                    LocalBudget(per_minute) if shared is None else shared.budget(name, per_minute)
                )
                self.rules.append(Rule(name, pattern, budget, per_evaluator))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.rules and scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope.get("path", "")
            for rule in self.rules:
                match = rule.pattern.fullmatch(path)
                if match is None:
                    continue
                key = self._key(scope, rule, match["key"])
                wait = await rule.budget.take(key)
                if wait > 0:
                    metrics.record_rate_limited(rule.name)
                    await self._refuse(rule, path, wait)(scope, receive, send)
                    return
                break
        await self.app(scope, receive, send)

    def _key(self, scope: Scope, rule: Rule, study_key: str) -> str:
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if rule.per_evaluator:
            headers = Headers(scope=scope)
            scheme, _, value = headers.get("authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else ""
            if not token:
                token = _cookie(headers.get("cookie", ""), self.cookie)
            if token:
                digest = hashlib.sha256(token.encode()).hexdigest()[:32]
                return f"{rule.name}:{study_key}:t:{digest}"
        return f"{rule.name}:ip:{address}"

    @staticmethod
    def _refuse(rule: Rule, path: str, wait: float) -> Response:
        retry_after = max(1, math.ceil(wait))
        what = "joins from this address" if rule.name == "join" else "answers from this evaluator"
        return refusal(
            status_code=429,
            code="rate_limited",
            title="Please wait",
            message=f"Too many {what}: please wait {retry_after} s and try again.",
            advice="Then go back and try again.",
            retry_after=retry_after,
            json="/api/" in path,
        )


def refusal(
    *,
    status_code: int,
    code: str,
    title: str,
    message: str,
    advice: str,
    retry_after: int,
    json: bool,
    refresh: bool = False,
) -> Response:
    """A request turned away before any route ran (rate limit, busy): JSON for API clients, a
    small page for browsers, with Retry-After; never stored by a cache."""
    headers = {"Retry-After": str(retry_after), "Cache-Control": "no-store"}
    if json:
        body = {"detail": {"code": code, "message": message}}
        return JSONResponse(body, status_code=status_code, headers=headers)
    meta = f'<meta http-equiv="refresh" content="{retry_after + 1}">' if refresh else ""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
        f'<title>{title}</title><link rel="stylesheet" href="/static/rate.css"></head>'
        f'<body class="rate-page"><main id="main"><h1>{title}</h1><p>{message}</p>'
        f"<p>{advice}</p></main></body></html>"
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip()
    return ""
