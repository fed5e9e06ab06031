"""Databases: a fresh (migrated) SQLite or PostgreSQL database, emptying tables between tests,
short read transactions and row counts that never hold a lock the app waits for."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

POSTGRES_URL = os.environ.get(
    "VIDARENA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def postgres_database(server_url: str = POSTGRES_URL, *, prefix: str = "vidarena") -> Iterator[str]:
    """A new empty PostgreSQL database `PREFIX_<random>` on the server; dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def fresh_database(
    kind: str,
    folder: Path,
    *,
    name: str = "vidarena",
    migrate: bool = True,
    server_url: str = POSTGRES_URL,
) -> Iterator[str]:
    """A new database of `kind` ("sqlite": `FOLDER/NAME.sqlite`; "postgres": a database
    `NAME_<random>` on the server, dropped on exit), migrated by Alembic unless `migrate` is
    false; yields its URL."""
    from app.db import upgrade_schema

    if kind == "sqlite":
        url = f"sqlite:///{folder / f'{name}.sqlite'}"
        if migrate:
            upgrade_schema(url)
        yield url
        return
    with postgres_database(server_url, prefix=name) as url:
        if migrate:
            upgrade_schema(url)
        yield url


def empty_tables(engine: sa.Engine) -> None:
    """Delete every row of every table (PostgreSQL: TRUNCATE ... RESTART IDENTITY)."""
    from app.models import metadata

    tables = list(reversed(metadata.sorted_tables))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


@contextmanager
def db(engine) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    """A short read transaction, so the app's writers are never blocked by the test."""
    from app.db import session_factory

    with session_factory(engine, read_only=True)() as session:
        yield session


def count(session, model) -> int:  # type: ignore[no-untyped-def]
    """Rows of `model` as the app has committed them."""
    # Commit (there is nothing to write) rather than roll back: that ends the transaction, so the
    # query sees what the app committed, without expiring loaded objects (expire_on_commit=False);
    # an expired object would reload in a new transaction and hold SQLite's write lock.
    session.commit()
    n = session.scalar(select(func.count(model.id)))
    session.commit()
    return n
