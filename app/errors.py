"""Request-validation errors that never echo the input back.

FastAPI's default 422 repeats each refused input: a 5 MB body comes back whole, and NaN or
Infinity (which Python's json accepts) make the error response itself fail with a 500. Here only
where and why is said. The evaluator API answers in its documented `{detail: {code, message}}`.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

RATING_API = re.compile(r"^/r/[^/]+/api/")
EVALUATOR_PATHS = "/r/"
MAX_LISTED = 10
MAX_ECHOED = 40  # characters of a refused name (e.g. an unknown criterion key) said back
# Evaluator answers are personal: as the rating routes' own (app.rating.deps.PRIVATE_HEADERS).
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def clip(text: str) -> str:
    """A name from the request, cut short enough to say back."""
    return text if len(text) <= MAX_ECHOED else text[: MAX_ECHOED - 1] + "…"


async def request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
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
