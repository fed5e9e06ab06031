"""Jinja2 templates and static files, shared by every router that renders HTML."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.templating import Jinja2Templates

from app.text import plural

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
FAVICON = STATIC_DIR / "favicon.svg"


# One way to show a moment everywhere (pages, the report, static/*.js): 24-hour UTC, marked as
# such, so that times written by the server and by the browser read alike.
def utc_time(moment: datetime) -> str:
    """`20:08:14 UTC`."""
    return f"{_utc(moment):%H:%M:%S} UTC"


def utc_datetime(moment: datetime) -> str:
    """`2025-03-01 20:08:14 UTC`."""
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def _utc(moment: datetime) -> datetime:
    # Naive datetimes in this app are UTC already (SQLite stores them without an offset).
    return moment.astimezone(UTC) if moment.tzinfo else moment


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters.update(utc_time=utc_time, utc_datetime=utc_datetime, plural=plural)
