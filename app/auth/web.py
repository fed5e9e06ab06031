"""Web glue for the admin: template helpers and the signed session cookie.

Templates call, with no import:
    {{ csrf_field() }}   the hidden <input name="csrf_token"> every POST form must contain
    {{ csrf_token() }}   the bare token (for a <meta> tag read by fetch() calls: X-CSRF-Token)
    flashes()            the pending (category, message) pairs, consumed when read
    is_admin()           whether the visitor is signed in as admin
"""

from __future__ import annotations

from typing import Any, Literal

import itsdangerous
from fastapi import Request
from jinja2 import Environment, pass_context
from markupsafe import Markup
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp

from app.auth import service


def _request(context: Any) -> Request:
    request: Request = context["request"]  # Starlette's template response puts it there
    return request


@pass_context
def csrf_token(context: Any) -> str:
    return service.csrf_token(session=_request(context).session)


@pass_context
def csrf_field(context: Any) -> Markup:
    # Markup.format escapes its arguments.
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        service.CSRF_FIELD, csrf_token(context)
    )


@pass_context
def flashes(context: Any) -> list[tuple[str, str]]:
    return service.pop_flashes(session=_request(context).session)


@pass_context
def is_admin(context: Any) -> bool:
    """Whether this request passed `require_admin` (or the login form's check)."""
    return getattr(_request(context).state, "admin", False) is True


def install_template_globals(env: Environment) -> None:
    env.globals.update(
        csrf_token=csrf_token, csrf_field=csrf_field, flashes=flashes, is_admin=is_admin
    )


class AdminSessionMiddleware(SessionMiddleware):
    """Starlette's session cookie, signed with the last of `keys` and verified with any of them
    (oldest first): sessions signed before a key rotation hold while the previous key is set."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: list[str],
        session_cookie: str,
        max_age: int | None,
        same_site: Literal["lax", "strict", "none"],
        https_only: bool,
    ) -> None:
        super().__init__(
            app,
            secret_key=keys[-1],
            session_cookie=session_cookie,
            max_age=max_age,
            same_site=same_site,
            https_only=https_only,
        )
        self.signer = itsdangerous.TimestampSigner(keys)
