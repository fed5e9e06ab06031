"""Database engine, sessions and the declarative base shared by every domain's models.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and write transactions start
with `BEGIN IMMEDIATE`: a deferred transaction that reads then writes cannot upgrade its read lock
while another writer waits, which under concurrent evaluators gives "database is locked" errors
(measured: docs/measurements.md). Writers queue for `BEGIN IMMEDIATE` on a WriteLock (below)
rather than in SQLite's busy handler; read-only sessions begin DEFERRED and never wait for
writers (WAL).
"""

from __future__ import annotations

import enum
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

from prometheus_client import Counter
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Enum,
    MetaData,
    create_engine,
    event,
    insert,
    inspect,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from app.config import Settings, get_settings

if TYPE_CHECKING:  # alembic is imported where migrations run, not by every process
    from alembic.config import Config

# Stable constraint names, so Alembic migrations can drop/alter them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use app.db.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def str_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    """Portable enum: a VARCHAR with a CHECK constraint (no native PostgreSQL type to migrate)."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def insert_new(
    session: Session, model: type[Base], rows: list[dict[str, object]], *, unique: list[str]
) -> int:
    """INSERT `rows` of `model`, leaving out those whose `unique` columns are already taken
    (ON CONFLICT DO NOTHING: writers racing to make the same rows make each once). Returns how
    many were inserted. SQLite and PostgreSQL."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - we support these two
        session.execute(insert(model), rows)
        return len(rows)
    # Each dialect's own insert() has on_conflict_do_nothing; both take the same arguments.
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    key = inspect(model).primary_key
    statement = dialect_insert(model).on_conflict_do_nothing(index_elements=unique).returning(*key)
    return len(session.execute(statement, rows).all())


def normalize_url(url: str) -> str:
    """Accept the usual `postgresql://` URLs and use psycopg 3, the driver we install."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if path and ":memory:" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_lock = WriteLock(Path(path + "-writelock") if path and ":memory:" not in path else None)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30, "factory": _SQLiteConnection},
        # Connections are cheap and opening one costs PRAGMAs: keep enough for every thread.
        pool_size=20,
        max_overflow=40,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: _SQLiteConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        dbapi_conn.write_lock = write_lock
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        # The engine's connect_args factory: SQLAlchemy types it as any DB-API connection.
        dbapi_conn = cast(_SQLiteConnection, conn.connection.dbapi_connection)
        if mode == "IMMEDIATE":
            dbapi_conn.take_write_lock()
        try:
            conn.exec_driver_sql(f"BEGIN {mode}")
        except BaseException:
            dbapi_conn._drop_write_lock()
            raise

    return engine


class WriteLock:
    """SQLite's write lock, handed to one writer at a time across threads and processes.

    SQLite makes a writer that finds the database locked sleep and retry (1, 2, 5 ... 100 ms),
    so under many concurrent evaluators the lock sits idle between holders while waiters sleep
    (measured: 38 trials/s where the hardware allows hundreds, see docs/benchmarks.md). Queueing
    writers on a thread lock and an flock(2) on a file beside the database wakes the next one
    the moment the previous commits. Writers that do not use it still work (busy_timeout).
    """

    def __init__(self, path: Path | None, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._pid = -1
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def _reset_after_fork(self) -> None:
        # A forked child must not share the parent's open file (flock is per open file) or lock.
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._fd = None
        if self.path is not None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        if self._pid != os.getpid():
            self._reset_after_fork()
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError(
                f"database is locked: no write lock within {self.timeout:g} s"
            )
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()


# Time SQLite's write lock was held: the one lock every writer of the database shares, so its
# seconds per trial set the ceiling on trials/s however many web processes there are. Not on a
# registry here (this module sits below app.ops): app.ops.metrics registers both.
WRITE_LOCK_SECONDS = Counter(
    "vidarena_sqlite_write_lock_seconds",
    "Seconds SQLite's database-wide write lock was held (BEGIN IMMEDIATE to commit/rollback).",
    registry=None,
)
WRITE_LOCK_HOLDS = Counter(
    "vidarena_sqlite_write_lock_holds", "Write transactions that held SQLite's lock.", registry=None
)


class _SQLiteConnection(sqlite3.Connection):
    """A sqlite3 connection that holds the engine's WriteLock from BEGIN IMMEDIATE to the end
    of the transaction (SQLAlchemy ends transactions through commit() and rollback())."""

    write_lock: WriteLock | None = None
    _holding = False
    _since = 0.0

    def take_write_lock(self) -> None:
        if self.write_lock is not None and not self._holding:
            self.write_lock.acquire()
            self._holding = True
            self._since = time.perf_counter()

    def _drop_write_lock(self) -> None:
        if self._holding and self.write_lock is not None:
            self._holding = False
            WRITE_LOCK_SECONDS.inc(time.perf_counter() - self._since)
            WRITE_LOCK_HOLDS.inc()
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._drop_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._drop_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._drop_write_lock()


@lru_cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine(settings: Settings | None = None) -> Engine:
    return _engine_for((settings or get_settings()).database_url)


def session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Writers begin IMMEDIATE on SQLite; read-only sessions (dashboards, media) begin DEFERRED."""
    if read_only and engine.dialect.name == "sqlite":
        engine = engine.execution_options(sqlite_begin="DEFERRED")
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None, *, read_only: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    factory = session_factory(engine or get_engine(), read_only=read_only)
    with factory() as session, session.begin():
        yield session


# --- migrations -------------------------------------------------------------------------------


def alembic_config(url: str) -> Config:
    """Alembic config pointing at migrations/, whatever the current directory."""
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade_schema(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade_schema(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def pending_migrations(engine: Engine) -> list[str]:
    """Revisions not yet applied to this database (empty when it is at head)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(
        alembic_config(engine.url.render_as_string(hide_password=False))
    )
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    heads = set(script.get_heads())
    if current == heads:
        return []
    revisions = script.iterate_revisions(tuple(heads), tuple(current) or None)
    return [rev.revision for rev in revisions][::-1] or sorted(heads - current)
