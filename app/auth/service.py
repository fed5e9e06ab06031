"""Admin authentication and CSRF tokens over a signed session cookie.

The session is a signed (not encrypted) cookie from Starlette's SessionMiddleware, signed with a
key derived for it alone (app.keys.ADMIN_SESSION; the previous secret's still verifies during a
rotation): it holds only `admin`, `login_at`, a random session id, the CSRF token and flash
messages, never the password. The session id names a row of `admin_session`, checked on every
admin request (one primary-key read): logging out revokes it there, so a copied cookie is
refused by every process at once, and a session begun under another password is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import MutableMapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as Database

from app import keys
from app.auth.models import AdminSession
from app.config import Settings
from app.db import utcnow

SESSION_COOKIE = "vidarena_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
DEFAULT_NEXT = "/admin/"

Session = MutableMapping[str, Any]


def session_keys(settings: Settings) -> list[str]:
    """Keys of the session cookie, oldest first (itsdangerous signs with the last one)."""
    secrets_ = [*reversed(settings.previous_secret_keys()), settings.resolved_secret_key()]
    return [keys.derive(secret, keys.ADMIN_SESSION) for secret in secrets_]


def session_cookie_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AdminSessionMiddleware (Starlette's, with several keys)."""
    return {
        "keys": session_keys(settings),
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


def _password_mac(secret: str, password: str) -> str:
    key = keys.derive(secret, keys.ADMIN_PASSWORD).encode()
    return hmac.new(key, password.encode(), hashlib.sha256).hexdigest()


def current_password_mac(settings: Settings) -> str:
    """The fingerprint a new session keeps of the password it began under."""
    return _password_mac(settings.resolved_secret_key(), settings.resolved_admin_password())


def password_macs(settings: Settings) -> frozenset[str]:
    """The fingerprints a live session may have: the current password under each verifying
    key. A session with none of them began under another password (or a retired key)."""
    password = settings.resolved_admin_password()
    secrets_ = (settings.resolved_secret_key(), *settings.previous_secret_keys())
    return frozenset(_password_mac(secret, password) for secret in secrets_)


def _row_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def log_in(*, session: Session, db: Database, settings: Settings) -> None:
    """Start a server-side session and rotate the cookie: nothing from the anonymous session
    (its CSRF token) survives. The caller commits `db`."""
    now = utcnow()
    session_id = secrets.token_urlsafe(32)
    db.execute(delete(AdminSession).where(AdminSession.expires_at < now))  # long over
    db.add(
        AdminSession(
            id=_row_id(session_id),
            created_at=now,
            expires_at=now + timedelta(seconds=settings.session_max_age),
            password_mac=current_password_mac(settings),
        )
    )
    session.clear()
    session["admin"] = True
    session["login_at"] = int(time.time())
    session["sid"] = session_id
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def log_out(*, session: Session, db: Database | None = None) -> None:
    """Forget the cookie's session; with `db`, revoke it for every copy of the cookie too."""
    session_id = session.get("sid")
    if db is not None and isinstance(session_id, str):
        db.execute(
            update(AdminSession)
            .where(AdminSession.id == _row_id(session_id), AdminSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    session.clear()


def claimed_session(*, session: Session, max_age: int) -> str | None:
    """The session id of a cookie that says it logged in less than max_age ago (an absolute
    cap: the cookie itself slides). Whether that session still holds is `session_is_live`."""
    login_at, session_id = session.get("login_at"), session.get("sid")
    if session.get("admin") is not True or not isinstance(login_at, int):
        return None
    if not isinstance(session_id, str) or time.time() - login_at >= max_age:
        return None
    return session_id


def session_is_live(
    *, db: Database, session_id: str, password_macs: frozenset[str], now: datetime | None = None
) -> bool:
    """Not logged out, not expired, begun under the current admin password."""
    row = db.execute(
        select(AdminSession.revoked_at, AdminSession.expires_at, AdminSession.password_mac).where(
            AdminSession.id == _row_id(session_id)
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return False
    return row.expires_at > (now or utcnow()) and row.password_mac in password_macs


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
    long and random (the generated one is 16 characters of token_urlsafe). At most
    `max_clients` addresses are remembered (the least recently failing are forgotten first),
    so a flood of addresses cannot grow it without bound.
    """

    def __init__(
        self, *, max_failures: int = 10, window_s: float = 300.0, max_clients: int = 10_000
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

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
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] < time.monotonic() - self.window_s:
            failures.popleft()
        return failures
