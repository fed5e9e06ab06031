"""Structured logs: one JSON object per line, with the request id and the Celery task id.

    {"ts": "2025-…+00:00", "level": "INFO", "logger": "vidarena.access",
     "message": "POST /r/{key}/api/join 200", "request_id": "6f1c…", "method": "POST",
     "route": "/r/{key}/api/join", "status": 200, "duration_ms": 4.1, "pid": 7}

- Every HTTP request gets a request id: the caller's `X-Request-ID` when it is a sane token
  (1 to 64 of `A-Za-z0-9._-`), else a new one; it is echoed in the response's `X-Request-ID` and
  stamped on every log line written while the request runs.
- Celery tasks stamp `task_id` and `task` on their lines (`bind_task` / `unbind_task`, connected
  to Celery's task_prerun/task_postrun signals in workers/tasks.py).
- Nothing secret is written: URL passwords (`postgresql://user:***@host`), bearer tokens, cookie
  values, `password=`/`token=`-style pairs and the literal values of every secret setting are
  replaced with `***` in messages, extra fields and tracebacks. Access lines carry the route
  template (`/r/{key}/media/{token}`), never the raw path or query string, which hold invite
  tokens, participant ids and media tokens. Client addresses are not logged (evaluators are
  pseudonymous).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings

REQUEST_ID_HEADER = "X-Request-ID"
request_id_var: ContextVar[str | None] = ContextVar("vidarena_request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("vidarena_task_id", default=None)
task_name_var: ContextVar[str | None] = ContextVar("vidarena_task_name", default=None)

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Paths polled by probes and scrapers: logged at DEBUG so they do not drown the access log.
QUIET_PREFIXES = ("/healthz", "/readyz", "/metrics", "/static/")
access_log = logging.getLogger("vidarena.access")
_MARK = "_vidarena_handler"

# --- redaction ------------------------------------------------------------------------------

REDACTED = "***"
_PATTERNS = [
    # scheme://user:password@host  ->  scheme://user:***@host
    (re.compile(r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(?=@)"), r"\g<keep>***"),
    # Authorization: Bearer xyz / Basic xyz
    (re.compile(r"(?i)(?P<keep>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"), r"\g<keep>***"),
    # password=..., "token": "...", secret_key: ..., csrf_token=..., cookie: ...
    (
        re.compile(
            r"(?i)(?P<keep>\b[\w-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key"
            r"|cookie|session|signature|credential)[\w-]*['\"]?\s*[:=]\s*['\"]?)[^'\"\s&,;}]+"
        ),
        r"\g<keep>***",
    ),
]
_SECRET_NAME = re.compile(
    r"(?i)password|passwd|secret|token|api_?key|access_?key|cookie|signature|credential"
)
_MIN_LITERAL = 6  # shorter "secrets" would redact ordinary words


class Redactor:
    """Removes secrets from text: known secret values, and anything shaped like one."""

    def __init__(self) -> None:
        self.literals: set[str] = set()

    def add(self, *values: str | None) -> None:
        for value in values:
            if value and len(value) >= _MIN_LITERAL:
                self.literals.add(value)

    def __call__(self, text: str) -> str:
        for literal in sorted(self.literals, key=len, reverse=True):
            if literal in text:
                text = text.replace(literal, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


redact = Redactor()


def reveal(secret: Any) -> str:
    """A SecretStr's value (or a plain string: `model_copy(update=…)` skips validation)."""
    if secret is None:
        return ""
    getter = getattr(secret, "get_secret_value", None)
    return str(getter() if getter is not None else secret)


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, including the password inside the database URL."""
    from sqlalchemy.engine import make_url

    values: list[str | None] = []
    for secret in (
        settings.admin_password,
        settings.secret_key,
        settings.s3_secret_access_key,
        settings.metrics_token,
    ):
        if secret is not None:
            values.append(reveal(secret))
    for url in (settings.database_url, settings.broker_url):
        try:
            values.append(make_url(url).password)
        except Exception:  # noqa: S112 - not a URL SQLAlchemy parses: the patterns still apply
            continue
    return [v for v in values if v]


# --- formatters -----------------------------------------------------------------------------

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _context() -> dict[str, str]:
    fields = {}
    for name, var in (("request_id", request_id_var), ("task_id", task_id_var)):
        value = var.get()
        if value:
            fields[name] = value
    if task_name := task_name_var.get():
        fields["task"] = task_name
    return fields


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_context(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = REDACTED if _SECRET_NAME.search(key) else _clean(value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(record.stack_info)
        entry["pid"] = record.process
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{k}={v}" for k, v in _context().items())
        return redact(f"{text} [{ids}]" if ids else text)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(settings: Settings, *, stream: Any = None) -> logging.Handler:
    """Route every log record (ours, uvicorn's, Celery's) through one redacting formatter.

    Idempotent: replaces the handler a previous call installed and leaves others alone (a
    test runner's capture handler, for one). uvicorn's own access log is silenced: it prints
    raw paths with query strings (invite tokens, participant ids); ours logs route templates.
    """
    redact.add(*secret_values(settings))
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    uvicorn_access.disabled = True
    return handler


# --- request ids ----------------------------------------------------------------------------


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/r/{key}/api/next`); bounded label for metrics."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    return "<unmatched>"


class RequestContextMiddleware:
    """Request id in and out, and one access log line per request (route template, no query)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            access_log.exception(
                "%s %s raised", scope["method"], route_template(scope), extra=_fields(scope, 500)
            )
            raise
        else:
            path = scope.get("path", "")
            level = logging.DEBUG if path.startswith(QUIET_PREFIXES) else logging.INFO
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            access_log.log(
                level,
                "%s %s %s",
                scope["method"],
                route_template(scope),
                status,
                extra={**_fields(scope, status), "duration_ms": duration_ms},
            )
        finally:
            request_id_var.reset(token)


def _fields(scope: Scope, status: int) -> dict[str, Any]:
    return {"method": scope["method"], "route": route_template(scope), "status": status}


# --- Celery task ids ------------------------------------------------------------------------


def bind_task(task_id: str | None, task_name: str | None) -> None:
    task_id_var.set(task_id)
    task_name_var.set(task_name)


def unbind_task() -> None:
    task_id_var.set(None)
    task_name_var.set(None)


def connect_celery_signals() -> None:
    """In a Celery worker: our formatter instead of Celery's, and task ids on every line."""
    from celery.signals import setup_logging, task_postrun, task_prerun

    from app.config import get_settings

    @setup_logging.connect(weak=False)
    def _setup(**_: Any) -> None:  # connecting at all stops Celery configuring logging itself
        configure_logging(get_settings())

    @task_prerun.connect(weak=False)
    def _bind(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        bind_task(task_id, getattr(task, "name", None))

    @task_postrun.connect(weak=False)
    def _unbind(**_: Any) -> None:
        unbind_task()
