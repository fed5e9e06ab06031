"""Shared fixtures: real databases (SQLite and PostgreSQL), settings, apps, live servers, a
signed-in admin client and headless Chromium. The helpers they are built on (and every other
helper shared between test files) live in tests/kit/.

Tests that take `database_url` (or anything built on it) run once on SQLite and once on
PostgreSQL. PostgreSQL comes from VIDARENA_TEST_POSTGRES_URL (default: the machine's server,
database `test`); each test session creates and drops its own database. When it is unreachable the
PostgreSQL runs are skipped locally and FAIL under CI=true, so CI cannot pass without it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.config import Settings
from app.db import make_engine, session_factory, upgrade_schema
from tests.kit.admin import ADMIN_PASSWORD, log_in
from tests.kit.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP
from tests.kit.db import POSTGRES_URL, empty_tables, postgres_database
from tests.kit.services import free_port, redis_broker_url, require_service


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    try:
        engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        require_service("PostgreSQL", f"{POSTGRES_URL}: {exc}")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def fresh_postgres_database(postgres_server_url: str) -> Iterator[str]:
    """An empty PostgreSQL database for this test session, dropped afterwards."""
    with postgres_database(postgres_server_url, prefix="vidarena_test") as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database (via Alembic, as users get it) for the whole test session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.sqlite'}"
    else:
        url = request.getfixturevalue("fresh_postgres_database")
    upgrade_schema(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    yield engine
    empty_tables(engine)
    engine.dispose()


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[sa.orm.Session]:
    with session_factory(engine)() as session:
        yield session


@pytest.fixture
def settings(database_url: str, tmp_path: Path, engine: sa.Engine) -> Settings:
    return Settings(
        env="test",
        var_dir=tmp_path / "var",
        database_url=database_url,
        storage_url=str(tmp_path / "media"),
        admin_password=ADMIN_PASSWORD,
        secret_key="test-secret-key-" + "x" * 32,
    )


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The render workers' var folder: tiny models are built once per test session and shared by
    every worker."""
    return tmp_path_factory.mktemp("var")


@pytest.fixture
def render_settings(settings: Settings, tiny_cache: Path, tmp_path: Path) -> Settings:
    """`settings` for a real render worker: the filesystem broker beside SQLite, Redis beside
    PostgreSQL, the shared tiny models and a 3 s lease (the crash tests wait for it to lapse)."""
    broker = f"filesystem://{tmp_path / 'broker'}" if settings.is_sqlite else redis_broker_url()
    return settings.model_copy(
        update={"broker_url": broker, "var_dir": tiny_cache, "render_lease_seconds": 3}
    )


@pytest.fixture
def app(settings: Settings):  # type: ignore[no-untyped-def]
    from app.main import create_app

    return create_app(settings)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        yield client


@pytest.fixture
def live_server(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app under a real uvicorn on a loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def admin(client):  # type: ignore[no-untyped-def]
    """The test client, signed in as the admin."""
    assert log_in(client).status_code == 303
    return client


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium per test session (a playwright Browser)."""
    if not CHROMIUM.exists():
        require_service("Chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        require_service("Playwright", f"the playwright package is not installed: {exc}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def chromium_page(chromium: Any) -> Iterator[Any]:
    """A fresh page (own cookies) at a desktop viewport; failing expectations wait 10 s."""
    context = chromium.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where browser tests put screenshots: VIDARENA_TEST_SCREENSHOTS to keep and look at them,
    else the test's tmp folder."""
    folder = Path(os.environ.get("VIDARENA_TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
