"""SQLite's write lock (app.db.WriteLock): writers across threads and processes take turns, and a
failed or abandoned transaction hands the lock on."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.db import make_engine

WRITES = 60


def _writer(url: str, threads: int) -> None:
    """`threads` threads each add WRITES rows, reading the count first (a read-then-write)."""
    engine = make_engine(url)

    def run() -> None:
        for _ in range(WRITES):
            with engine.begin() as conn:
                n = conn.execute(sa.text("SELECT count(*) FROM item")).scalar_one()
                conn.execute(sa.text("INSERT INTO item (n) VALUES (:n)"), {"n": n})

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    engine.dispose()


def test_writers_in_threads_and_processes_take_turns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'turns.sqlite'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE item (id INTEGER PRIMARY KEY, n INTEGER UNIQUE)"))
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=_writer, args=(url, 4)) for _ in range(2)]
    for process in processes:
        process.start()
    _writer(url, 4)
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    # Each insert saw every earlier one (n is unique): the transactions never overlapped.
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM item")).scalar_one() == 12 * WRITES
    assert (tmp_path / "turns.sqlite-writelock").exists()
    engine.dispose()


def test_a_failed_transaction_hands_the_lock_on(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fail.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE item (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO item (id) VALUES (1)"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO item (id) VALUES (1)"))
    # An abandoned connection (closed, never committed) must not keep it either.
    raw = engine.raw_connection()
    raw.driver_connection.take_write_lock()
    raw.close()
    done = threading.Event()

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO item (id) VALUES (2)"))
        done.set()

    started = time.monotonic()
    threading.Thread(target=write, daemon=True).start()
    assert done.wait(timeout=5), "the write lock was not released"
    assert time.monotonic() - started < 5
    engine.dispose()


def test_read_transactions_do_not_take_the_lock(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'read.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE item (id INTEGER PRIMARY KEY)"))
    reader = engine.execution_options(sqlite_begin="DEFERRED")
    with engine.begin() as writing, reader.connect() as reading:
        writing.execute(sa.text("INSERT INTO item (id) VALUES (1)"))
        # A reader during a write transaction is not blocked (WAL: it sees the last commit).
        assert reading.execute(sa.text("SELECT count(*) FROM item")).scalar_one() == 0
    engine.dispose()
