"""The dependencies every admin route runs: `require_admin` (who) and `verify_csrf` (from where).

Build admin routers with `admin_router()`, which applies both to every route it will ever hold:

    from app.auth.deps import admin_router
    router = admin_router(tags=["clips"])

`create_app` calls `assert_admin_routes_protected` last, so an /admin route that bypasses them
stops the app from starting instead of shipping unprotected.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlencode

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


async def require_admin(request: Request) -> None:
    """Anonymous browser GET: 303 to the login form. Anything else anonymous: 401."""
    max_age = request.app.state.settings.session_max_age
    if service.is_admin(session=request.session, max_age=max_age):
        return
    if request.session.get("admin"):
        service.log_out(session=request.session)  # expired: drop it, do not keep extending it
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
