"""FastAPI dependencies shared by every router: settings, sessions, the current study.

The study of a route's `{slug}` comes from `StudyDep` (read session) or `StudyForUpdateDep`
(write session), both over the one lookup, `studies.service.get_by_slug` (the CLI's
`_study_or_exit` too); an unknown slug raises StudyNotFoundError, which the app's one handler
answers with 404 (a page under /admin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.studies import service as studies_service
from app.studies.models import Study

# These dependencies are `async def` although they do no I/O worth a thread: FastAPI runs a
# sync dependency in the thread pool, and each such hop cost about 0.3 ms of CPU per request
# (measured: 6 hops, 2 ms, for one media request). A session's transaction is over by the time
# it closes here (endpoints commit, roll back or close it), so closing does not block the loop.


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A write session (BEGIN IMMEDIATE on SQLite). Routers commit explicitly."""
    with request.app.state.session_factory() as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """A read-only session for pages and dashboards (deferred BEGIN on SQLite)."""
    with request.app.state.read_session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": a session closes (its connection back in the pool) as soon as the endpoint
# returns, not after the response has been sent to a client that may read it slowly; responses
# that stream from the database open sessions of their own.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]


def get_study(slug: str, session: ReadSessionDep) -> Study:
    try:
        study = studies_service.get_by_slug(session=session, slug=slug)
    finally:
        # Give the connection back before the request waits for a thread to run its handler
        # (this dependency runs in one, the handler in another): a burst of queued requests
        # must not hold the pool. The study stays loaded; the handler's reads begin anew.
        session.commit()
    return study


def get_study_for_update(slug: str, session: SessionDep) -> Study:
    """The study loaded in the request's write session (the route's `SessionDep` is the same
    session: FastAPI makes one per request), for routes that change it or its clips."""
    return studies_service.get_by_slug(session=session, slug=slug)


StudyDep = Annotated[Study, Depends(get_study)]
StudyForUpdateDep = Annotated[Study, Depends(get_study_for_update)]
