"""Portable SQL expressions for times (SQLite stores UTC text, PostgreSQL timestamptz).

Formatting in SQL rather than parsing a million datetimes in Python keeps exports fast, and
gives the same text on both databases.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, cast, extract, func
from sqlalchemy.sql.elements import ColumnElement


def minute_text(column: Any, dialect: str) -> ColumnElement[str]:
    """`YYYY-MM-DDTHH:MM` in UTC (a minute bucket)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI')
    return func.strftime("%Y-%m-%dT%H:%M", column)


def timestamp_text(column: Any, dialect: str) -> ColumnElement[str]:
    """ISO 8601 in UTC with milliseconds, e.g. `2025-03-01T09:00:00.125Z` (NULL stays NULL)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    return func.strftime("%Y-%m-%dT%H:%M:%fZ", column)


def millis_between(start: Any, end: Any, dialect: str) -> ColumnElement[int]:
    """Whole milliseconds from `start` to `end` (NULL when either is NULL)."""
    if dialect == "postgresql":
        seconds = extract("epoch", end - start)
        return cast(func.round(seconds * 1000), Integer)
    days = func.julianday(end) - func.julianday(start)
    return cast(func.round(days * 86_400_000), Integer)
