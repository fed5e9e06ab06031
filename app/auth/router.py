"""Admin login and logout."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth import service
from app.auth.deps import admin_router, signed_in, verify_csrf
from app.config import Settings
from app.deps import SessionDep, SettingsDep
from app.web.pages import templates

# Slows each wrong guess down without holding a worker thread (this endpoint is async).
FAILED_LOGIN_DELAY_S = 0.3

# The login form is the only /admin page open to anonymous visitors; it still checks CSRF
# (against a token stored in the anonymous session), so no other site can log you in.
login_router = APIRouter(prefix="/admin", dependencies=[Depends(verify_csrf)], tags=["auth"])
router = admin_router(tags=["auth"])


def _render_login(
    request: Request,
    *,
    settings: Settings,
    next_url: str,
    error: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    context = {
        "next_url": next_url,
        "error": error,
        "password_file": settings.var_dir / "admin_password"
        if settings.env == "development"
        else None,
    }
    return templates.TemplateResponse(
        request, "admin/login.html", context, status_code=status_code, headers=headers
    )


@login_router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, settings: SettingsDep, next: str | None = None) -> Response:
    next_url = service.safe_next(next)
    if await signed_in(request):
        return RedirectResponse(next_url, status_code=303)
    return _render_login(request, settings=settings, next_url=next_url)


@login_router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    settings: SettingsDep,
    password: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = service.DEFAULT_NEXT,
) -> Response:
    next_url = service.safe_next(next_url)
    throttle: service.LoginThrottle = request.app.state.login_throttle
    client = request.client.host if request.client else "unknown"
    if wait := throttle.retry_after(client):
        error = f"Too many failed attempts. Try again in {wait} seconds."
        headers = {"Retry-After": str(wait)}
        return _render_login(
            request,
            settings=settings,
            next_url=next_url,
            error=error,
            status_code=429,
            headers=headers,
        )
    if not service.password_matches(settings=settings, candidate=password):
        throttle.failed(client)
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)
        error = "Wrong password. Nothing was changed; try again."
        return _render_login(
            request, settings=settings, next_url=next_url, error=error, status_code=401
        )
    throttle.succeeded(client)
    await anyio.to_thread.run_sync(partial(_log_in, request, settings))
    return RedirectResponse(next_url, status_code=303)


def _log_in(request: Request, settings: Settings) -> None:
    with request.app.state.session_factory() as db:
        service.log_in(session=request.session, db=db, settings=settings)
        db.commit()


@router.post("/logout")
def logout(request: Request, db: SessionDep) -> Response:
    """Ends the session on the server too: a copy of the cookie is refused from now on."""
    service.log_out(session=request.session, db=db)
    db.commit()
    service.flash(session=request.session, message="Signed out.")
    return RedirectResponse("/admin/login", status_code=303)
