"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.config import Settings, get_settings
from app.db import get_engine, session_factory
from app.web import STATIC_DIR


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="vidarena", version=__version__)
    app.state.settings = settings
    engine = get_engine(settings)
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.read_session_factory = session_factory(engine, read_only=True)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
