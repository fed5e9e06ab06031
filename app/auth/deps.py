"""The dependencies every admin route runs: `require_admin` (who) and `verify_csrf` (from where).

Build admin routers with `admin_router()`, which applies both to every route it will ever hold:

    from app.auth.deps import admin_router
    router = admin_router(tags=["clips"])

`create_app` calls `assert_admin_routes_protected` last, so an /admin route that bypasses them
stops the app from starting instead of shipping unprotected.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from app.auth import service

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The only /admin paths anyone may reach: the login form must be reachable to log in.
PUBLIC_ADMIN_PATHS = frozenset({"/admin/login"})
CSRF_MESSAGE = (
    "This form's security token is missing or out of date (the session may have expired or "
    "the page was opened before you signed in). Go back, reload the page and submit it again."
)


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


async def signed_in(request: Request) -> bool:
    """Whether the session cookie names a live admin session: one database read (on a worker
    thread, its connection returned there) unless the cookie claims none. Kept on the request,
    where templates read it (`is_admin()`)."""
    known = getattr(request.state, "admin", None)
    if isinstance(known, bool):
        return known
    settings = request.app.state.settings
    session_id = service.claimed_session(session=request.session, max_age=settings.session_max_age)
    live = session_id is not None and await anyio.to_thread.run_sync(
        partial(_session_is_live, request.app, session_id)
    )
    request.state.admin = live
    return live


def _session_is_live(app: FastAPI, session_id: str) -> bool:
    macs = getattr(app.state, "admin_password_macs", None)
    if macs is None:  # settings never change under a running app
        macs = app.state.admin_password_macs = service.password_macs(app.state.settings)
    with app.state.read_session_factory() as db:
        return service.session_is_live(db=db, session_id=session_id, password_macs=macs)


async def require_admin(request: Request) -> None:
    """Anonymous browser GET: 303 to the login form. Anything else anonymous: 401."""
    if await signed_in(request):
        return
    if request.session.get("admin"):
        # Expired, logged out or from before a password change: drop it, do not extend it.
        service.log_out(session=request.session)
    if request.method in ("GET", "HEAD") and not wants_json(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = "/admin/login?" + urlencode({"next": service.safe_next(target)})
        raise HTTPException(status_code=303, headers={"Location": location})
    raise HTTPException(status_code=401, detail="Sign in as admin first.")


async def verify_csrf(request: Request) -> None:
    """Unsafe methods must echo the session's token (form field `csrf_token` or X-CSRF-Token)."""
    if request.method in SAFE_METHODS:
        return
    submitted = request.headers.get(service.CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    is_form = content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))
    if submitted is None and is_form:
        # Cached on the request: FastAPI has usually parsed it already for the route's fields.
        value = (await request.form()).get(service.CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    if not service.csrf_matches(session=request.session, submitted=submitted):
        raise HTTPException(status_code=403, detail=CSRF_MESSAGE)


AdminDep = Annotated[None, Depends(require_admin)]
CsrfDep = Annotated[None, Depends(verify_csrf)]
# Order matters: an anonymous request gets 401 before its CSRF token is looked at.
ADMIN_DEPENDENCIES = [Depends(require_admin), Depends(verify_csrf)]


def admin_router(**kwargs: Any) -> APIRouter:
    """An APIRouter under /admin whose every route requires an admin session and CSRF token."""
    dependencies = [*ADMIN_DEPENDENCIES, *kwargs.pop("dependencies", [])]
    return APIRouter(prefix="/admin", dependencies=dependencies, **kwargs)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def assert_admin_routes_protected(app: FastAPI) -> None:
    """Refuse to start when a route under /admin lacks require_admin or verify_csrf.

    The login form is the one exception to require_admin; it still checks CSRF. FastAPI keeps
    included routers nested in `app.routes`; iter_route_contexts yields the routes as served.
    """
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if not (path == "/admin" or path.startswith("/admin/")):
            continue
        required = {verify_csrf} if path in PUBLIC_ADMIN_PATHS else {require_admin, verify_csrf}
        dependant = getattr(route, "dependant", None)
        calls = set(_calls(dependant)) if isinstance(dependant, Dependant) else set()
        if not required <= calls:
            raise RuntimeError(
                f"route {path} is under /admin but does not depend on "
                f"{', '.join(sorted(f.__name__ for f in required))}: build its router with "
                "app.auth.deps.admin_router()"
            )
