"""Web glue for the admin: template helpers, HTML error pages, a request-body limit.

Templates call, with no import:
    {{ csrf_field() }}   the hidden <input name="csrf_token"> every POST form must contain
    {{ csrf_token() }}   the bare token (for a <meta> tag read by fetch() calls: X-CSRF-Token)
    flashes()            the pending (category, message) pairs, consumed when read
    is_admin()           whether the visitor is signed in as admin
"""

from __future__ import annotations

from typing import Any

import itsdangerous
from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from jinja2 import Environment, pass_context
from markupsafe import Markup
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import service
from app.auth.deps import wants_json
from app.studies.studyfile import MAX_FILE_BYTES
from app.web import templates

ERROR_TITLES = {
    400: "Bad request",
    401: "Sign in required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Upload too large",
    429: "Too many attempts",
}


def _request(context: Any) -> Request:
    return context["request"]


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


def _wants_html(request: Request) -> bool:
    return request.url.path.startswith("/admin") and not wants_json(request)


async def http_error_page(request: Request, exc: Exception) -> Response:
    """HTML error pages under /admin (unless JSON is asked for); FastAPI's JSON elsewhere."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < 400:  # require_admin's redirect to the login form
        return Response(status_code=exc.status_code, headers=exc.headers)
    if not _wants_html(request):
        return await http_exception_handler(request, exc)
    message = str(exc.detail)
    if exc.status_code == 413:
        message = f"The upload is too large: each file may be at most {MAX_FILE_BYTES // 2**20} MB."
    context = {
        "status_code": exc.status_code,
        "title": ERROR_TITLES.get(exc.status_code, "Error"),
        "message": message,
    }
    return templates.TemplateResponse(
        request, "error.html", context, status_code=exc.status_code, headers=exc.headers
    )


class AdminSessionMiddleware(SessionMiddleware):
    """Starlette's session cookie, signed with the last of `keys` and verified with any of them
    (oldest first): sessions signed before a key rotation hold while the previous key is set."""

    def __init__(self, app: ASGIApp, *, keys: list[str], **options: Any) -> None:
        super().__init__(app, secret_key=keys[-1], **options)
        self.signer = itsdangerous.TimestampSigner(keys)


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` under `path_prefix`, with the HTML 413 page.

    The 413 is raised from receive(), so it reaches the app's exception handlers (FastAPI's own
    max_body_size answers a declared oversize Content-Length with plain text, whatever they say).
    Chunked bodies are counted as they stream in; nothing past the limit is read.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, path_prefix: str = "/") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise StarletteHTTPException(status_code=413)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise StarletteHTTPException(status_code=413)
            return message

        await self.app(scope, limited_receive, send)
