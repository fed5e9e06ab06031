"""Alembic migrations upgrade and downgrade cleanly, and the models match them (`alembic check`)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from app.db import alembic_config, downgrade_schema, make_engine, pending_migrations, upgrade_schema
from tests.kit.db import postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mig.sqlite'}"
        return
    server = request.getfixturevalue("postgres_server_url")
    with postgres_database(server, prefix="vidarena_mig") as url:
        yield url


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_check_downgrade_upgrade(empty_database_url):
    url = empty_database_url
    engine = make_engine(url)
    assert pending_migrations(engine)
    upgrade_schema(url)
    assert pending_migrations(engine) == []
    assert {"study", "arm", "prompt", "clip", "matchup", "evaluator", "trial", "vote"} <= tables(
        url
    )
    # Models and migrations agree: autogenerate finds nothing to add.
    command.check(alembic_config(url))
    downgrade_schema(url, "base")
    assert tables(url) == set()
    upgrade_schema(url)
    assert "vote" in tables(url)
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
