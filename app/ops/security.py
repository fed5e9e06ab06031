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

Rate limits: a token bucket per key, in this process's memory. Joining is keyed by client
address, submitting votes by evaluator token (client address when there is none). A bucket holds
`per_minute` tokens and refills at `per_minute / 60` per second, so a burst of that size passes
and then one request per `60 / per_minute` seconds. Refusals are 429 with `Retry-After`. With
several web processes each keeps its own buckets (the effective limit is N times the setting); see
README "Scaling out" for shared limits.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.ops import metrics

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


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    limiter: RateLimiter
    per_evaluator: bool


JOIN_PATH = re.compile(r"/r/(?P<key>[^/]+)/(?:api/)?join/?")
SUBMIT_PATH = re.compile(r"/r/(?P<key>[^/]+)/api/trials/[^/]+/votes/?")


class RateLimitMiddleware:
    """429 for POSTs to join and submit past their budget; everything else passes untouched."""

    def __init__(self, app: ASGIApp, *, settings: Settings, evaluator_cookie: str) -> None:
        self.app = app
        self.cookie = evaluator_cookie  # the rating domain's name for it, passed in from above
        self.rules = [
            Rule(
                "join",
                JOIN_PATH,
                RateLimiter(per_minute=settings.rate_limit_join_per_minute),
                per_evaluator=False,
            ),
            Rule(
                "submit",
                SUBMIT_PATH,
                RateLimiter(per_minute=settings.rate_limit_submit_per_minute),
                per_evaluator=True,
            ),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope.get("path", "")
            for rule in self.rules:
                match = rule.pattern.fullmatch(path)
                if match is None:
                    continue
                key = self._key(scope, rule, match["key"])
                wait = rule.limiter.take(key)
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
