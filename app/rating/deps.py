"""Dependencies of the evaluator pages and API: the study behind a link key, the evaluator
behind a cookie or bearer token, the signing secret and the media storage."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import Depends, Request, Response
from sqlalchemy.orm import Session

from app.config import Settings
from app.deps import ReadSessionDep, SessionDep, SettingsDep
from app.rating import enrollment, tokens
from app.rating.errors import CrossSiteError, UnknownLinkError
from app.rating.models import Evaluator
from app.storage import Storage, get_storage
from app.studies.models import Study

T = TypeVar("T")

# Evaluator responses are personal: never stored by shared caches, never leak the invite or
# participant id of the URL through a Referer header.
PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def get_secret(request: Request, settings: SettingsDep) -> str:  # async: see app/deps.py
    """The current secret, carrying the previous one (accepted during a key rotation)."""
    secret = getattr(request.app.state, "rating_secret", None)
    if secret is None:
        secret = request.app.state.rating_secret = tokens.SigningSecret(
            settings.resolved_secret_key(), settings.previous_secret_keys()
        )
    return secret


SecretDep = Annotated[str, Depends(get_secret)]


async def get_media_storage(request: Request, settings: SettingsDep) -> Storage:
    storage = getattr(request.app.state, "storage", None)
    if storage is None:
        storage = request.app.state.storage = get_storage(settings)
    return storage


StorageDep = Annotated[Storage, Depends(get_media_storage)]


async def in_rating_lane(request: Request, function: Callable[..., T], *args: Any) -> T:
    """Run a sync evaluator endpoint on the process's rating threads (`VIDARENA_RATING_THREADS`,
    few) rather than the shared pool: a submit holds the database's write lock (SQLite) or the
    study's assignment lock (PostgreSQL) while it runs Python, and every other runnable thread of
    the process takes turns on the GIL with it, stretching the hold for all processes (measured:
    1.8 ms alone, about 7 ms beside 8 busy threads; docs/benchmarks.md, Load)."""
    lane = getattr(request.app.state, "rating_lane", None)  # None: the shared pool
    return await anyio.to_thread.run_sync(partial(function, *args), limiter=lane)


def find_study(session: Session, secret: str, key: str) -> Study:
    study = enrollment.get_study_by_key(session=session, secret=secret, key=key)
    if study is None:
        raise UnknownLinkError()
    return study


# Sec-Fetch-Site values of a request this site's own pages (or the user, by hand) made.
OWN_SITE = frozenset({"same-origin", "none"})


def check_same_origin(request: Request) -> None:
    """Refuse a join that another website's page sent (it would set this browser's evaluator
    cookie: the visitor would then rate as whoever the other site chose, e.g. for their pay).

    Browsers say where a request comes from in Sec-Fetch-Site, whatever the referrer policy;
    older ones only send Origin, which is `null` from our own pages (they send no referrer),
    so only a different origin is refused there. API clients send neither and pass."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site.lower() not in OWN_SITE:
            raise CrossSiteError()
        return
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise CrossSiteError()


def request_token(request: Request) -> str | None:
    """The evaluator token of a request: `Authorization: Bearer`, else the cookie."""
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(tokens.EVALUATOR_COOKIE)


def find_evaluator(
    request: Request, session: Session, secret: str, study: Study
) -> Evaluator | None:
    return enrollment.evaluator_from_token(
        session=session, secret=secret, study=study, token=request_token(request)
    )


def set_evaluator_cookie(
    response: Response, *, settings: Settings, secret: str, key: str, evaluator: Evaluator
) -> str:
    """Put the evaluator's token in a cookie scoped to this study's pages; returns the token."""
    token = tokens.evaluator_token(secret, evaluator.study_id, evaluator.public_id)
    response.set_cookie(
        tokens.EVALUATOR_COOKIE,
        token,
        max_age=tokens.EVALUATOR_MAX_AGE,
        path=f"/r/{key}",
        httponly=True,
        samesite="lax",
        secure=settings.https_only,
    )
    return token


__all__ = [
    "PRIVATE_HEADERS",
    "CrossSiteError",
    "ReadSessionDep",
    "SecretDep",
    "SessionDep",
    "StorageDep",
    "UnknownLinkError",
    "check_same_origin",
    "find_evaluator",
    "find_study",
    "in_rating_lane",
    "request_token",
    "set_evaluator_cookie",
]
