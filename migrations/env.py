"""Alembic environment: the URL comes from vidarena's settings (or `-x url=...`)."""

from __future__ import annotations

from alembic import context

from app.config import get_settings
from app.db import make_engine, normalize_url
from app.models import metadata

target_metadata = metadata


def _url() -> str:
    config_url = context.config.attributes.get("url") or context.get_x_argument(
        as_dictionary=True
    ).get("url")
    return normalize_url(config_url or get_settings().database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,  # SQLite can only ALTER by copying the table
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    if connection.dialect.name == "sqlite":
        # SQLite ALTERs by copying tables ("batch" mode); with foreign keys on, dropping the old
        # copy of a parent table would cascade-delete its children's rows. The pragma only takes
        # effect outside a transaction, so it goes to the driver connection before BEGIN.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
