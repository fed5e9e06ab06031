"""Admin authentication and CSRF tokens over a signed session cookie.

The session is a signed (not encrypted) cookie from Starlette's SessionMiddleware: it holds only
`admin`, `login_at`, the CSRF token and flash messages, never the password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from app.config import Settings

SESSION_COOKIE = "vidarena_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
DEFAULT_NEXT = "/admin/"

Session = MutableMapping[str, Any]


def session_cookie_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for Starlette's SessionMiddleware."""
    return {
        "secret_key": settings.resolved_secret_key(),
        "session_cookie": SESSION_COOKIE,
        "max_age": settings.session_max_age,
        "same_site": "lax",
        "https_only": settings.https_only,
    }


# --- password and session ------------------------------------------------------------------


def password_matches(*, settings: Settings, candidate: str) -> bool:
    """Constant-time comparison; hashing first hides the password's length too."""
    expected = hashlib.sha256(settings.resolved_admin_password().encode()).digest()
    given = hashlib.sha256(candidate.encode()).digest()
    return hmac.compare_digest(given, expected)


def log_in(*, session: Session) -> None:
    """Rotate the session: nothing from the anonymous session (its CSRF token) survives."""
    session.clear()
    session["admin"] = True
    session["login_at"] = int(time.time())
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def log_out(*, session: Session) -> None:
    session.clear()


def is_admin(*, session: Session, max_age: int) -> bool:
    """Logged in, and not longer ago than max_age (an absolute cap: the cookie itself slides)."""
    login_at = session.get("login_at")
    if session.get("admin") is not True or not isinstance(login_at, int):
        return False
    return time.time() - login_at < max_age


def safe_next(value: str | None) -> str:
    """Where to go after login: only a path under /admin on this site (no open redirect)."""
    if not value or "\\" in value or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return DEFAULT_NEXT
    if parts.path != "/admin" and not parts.path.startswith("/admin/"):
        return DEFAULT_NEXT
    return value


# --- CSRF -----------------------------------------------------------------------------------


def csrf_token(*, session: Session) -> str:
    """The session's CSRF token, created on first use (also before login, for the login form)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def csrf_matches(*, session: Session, submitted: str | None) -> bool:
    expected = session.get(CSRF_FIELD)
    if not isinstance(expected, str) or not expected or not submitted:
        return False
    return hmac.compare_digest(submitted.encode(), expected.encode())


# --- flash messages -------------------------------------------------------------------------


def flash(*, session: Session, message: str, category: str = "info") -> None:
    """A one-time message shown on the next rendered page (kept short: it lives in the cookie)."""
    session["flashes"] = [*session.get("flashes", []), [category, message[:500]]]


def pop_flashes(*, session: Session) -> list[tuple[str, str]]:
    return [(category, message) for category, message in session.pop("flashes", [])]


# --- brute force ----------------------------------------------------------------------------


class LoginThrottle:
    """Failed logins per client address in a sliding window; in memory, per process.

    Enough to turn an online guessing attack into a crawl; the password itself must still be
    long and random (the generated one is 16 characters of token_urlsafe).
    """

    def __init__(self, *, max_failures: int = 10, window_s: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int:
        """Seconds until `client` may try again; 0 when it may try now."""
        failures = self._recent(client)
        if not failures:
            self._failures.pop(client, None)  # forget clients whose failures expired
        if len(failures) < self.max_failures:
            return 0
        return max(1, int(failures[0] + self.window_s - time.monotonic()) + 1)

    def failed(self, client: str) -> None:
        self._recent(client).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] < time.monotonic() - self.window_s:
            failures.popleft()
        return failures
