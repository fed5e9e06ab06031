"""Error responses, one handler per error family, JSON or HTML by route.

- `http_error_page`: HTTP errors as HTML pages under /admin (unless JSON is asked for), FastAPI's
  JSON elsewhere.
- `request_validation_error`: request-validation errors that never echo the input back.
- `study_not_found`: an unknown study slug, as a 404 (a page under /admin).
- `rating_error`: what the rating flow refuses (app/rating/errors.py): JSON on the evaluator
  API, text on the media route, a page on the evaluator pages.

FastAPI's default 422 repeats each refused input: a 5 MB body comes back whole, and NaN or
Infinity (which Python's json accepts) make the error response itself fail with a 500. Here only
where and why is said. The evaluator API answers in its documented `{detail: {code, message}}`.
"""

from __future__ import annotations

import re

from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth.deps import wants_json
from app.rating.deps import PRIVATE_HEADERS
from app.rating.errors import RatingError
from app.studies.service import StudyNotFoundError
from app.studies.studyfile import MAX_FILE_BYTES
from app.web.pages import templates

RATING_API = re.compile(r"^/r/[^/]+/api/")
EVALUATOR_PATHS = "/r/"
MAX_LISTED = 10
MAX_ECHOED = 40  # characters of a refused name (e.g. an unknown criterion key) said back
RATING_MEDIA = re.compile(r"^/r/[^/]+/media/")
# Evaluator answers are personal: as the rating routes' own.
PRIVATE = PRIVATE_HEADERS
# Titles of the evaluator's message page, by error code.
RATING_TITLES = {
    "study_closed": "This study has closed",
    "study_not_open": "Not open yet",
    "unknown_link": "Link not found",
    "invite_required": "Invitation needed",
    "invalid_invite": "Invitation not valid",
    "invalid_external_id": "Participant id not valid",
    "invite_used": "Invitation already used",
    "external_id_used": "Already joined",
    "cross_site": "Please start from your link",
    "not_joined": "Please start from your link",
}


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


def clip(text: str) -> str:
    """A name from the request, cut short enough to say back."""
    return text if len(text) <= MAX_ECHOED else text[: MAX_ECHOED - 1] + "…"


async def request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [clip(str(part)) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": e.get("type", ""),
        }
        for e in exc.errors()[:MAX_LISTED]
    ]
    headers = PRIVATE if request.url.path.startswith(EVALUATOR_PATHS) else None
    if RATING_API.match(request.url.path):
        message = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        detail = {"code": "invalid_request", "message": message or "the request is not valid"}
        return JSONResponse({"detail": detail}, status_code=422, headers=headers)
    return JSONResponse({"detail": errors}, status_code=422, headers=headers)


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


async def rating_error(request: Request, exc: Exception) -> Response:
    """A refused evaluator request: `{"detail": {"code", "message"}}` on the API, the message as
    text on the media route, the evaluator's message page elsewhere. Nothing was stored."""
    assert isinstance(exc, RatingError)
    path = request.url.path
    if RATING_API.match(path) or not path.startswith(EVALUATOR_PATHS):
        detail = {"code": exc.code, "message": exc.message}
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=PRIVATE)
    if RATING_MEDIA.match(path):
        return Response(exc.message, status_code=exc.status_code, headers=PRIVATE)
    context = {"title": RATING_TITLES.get(exc.code, "Sorry"), "message": exc.message}
    return templates.TemplateResponse(
        request, "rate/message.html", context, status_code=exc.status_code, headers=PRIVATE
    )


async def study_not_found(request: Request, exc: Exception) -> Response:
    """The one answer to an unknown `{slug}`, wherever it was looked up."""
    assert isinstance(exc, StudyNotFoundError)
    return await http_error_page(request, StarletteHTTPException(status_code=404, detail=str(exc)))
