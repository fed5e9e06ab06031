"""The floor the app is measured against in saturation mode: a minimal FastAPI endpoint on the
same database kind, served the same way (`benchmarks.load.floor:create_floor_app`), doing one
indexed read and one insert per request in one transaction; and the clients loading it."""

from __future__ import annotations

import asyncio
import os
import random
import time
from contextlib import suppress
from functools import partial
from typing import Any

from benchmarks.load.client import Client, RequestFailedError, timed
from benchmarks.load.config import FLOOR_ITEMS
from benchmarks.load.stats import Stats

FLOOR_APP = "benchmarks.load.floor:create_floor_app"


def prepare_floor(url: str) -> None:
    import sqlalchemy as sa

    from app.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE floor_item (id INTEGER PRIMARY KEY, key VARCHAR(64) NOT NULL, "
                "n INTEGER NOT NULL)"
            )
        )
        conn.execute(sa.text("CREATE UNIQUE INDEX ix_floor_item_key ON floor_item (key)"))
        id_type = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
        conn.execute(
            sa.text(
                f"CREATE TABLE floor_event (id {id_type} PRIMARY KEY, item_id INTEGER NOT NULL, "
                "choice VARCHAR(8) NOT NULL, created_at VARCHAR(40) NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO floor_item (id, key, n) VALUES (:id, :key, :n)"),
            [{"id": i, "key": f"item-{i}", "n": i} for i in range(1, FLOOR_ITEMS + 1)],
        )
    engine.dispose()


def create_floor_app():  # type: ignore[no-untyped-def]
    """The floor: FastAPI, a sync endpoint (threadpool, like the app's), SQLAlchemy on the same
    engine settings as the app (app.db.make_engine: WAL and BEGIN IMMEDIATE on SQLite, a pool
    on PostgreSQL), one indexed read and one insert in one transaction, no middleware."""
    from datetime import UTC, datetime

    import sqlalchemy as sa
    from fastapi import FastAPI

    from app.db import make_engine

    engine = make_engine(os.environ["LOAD_FLOOR_DATABASE_URL"])
    read = sa.text("SELECT id, n FROM floor_item WHERE key = :key")
    write = sa.text(
        "INSERT INTO floor_event (item_id, choice, created_at) VALUES (:item, :choice, :at)"
    )
    app = FastAPI()

    @app.post("/floor/{item}")
    def floor(item: int) -> dict[str, int]:
        with engine.begin() as conn:
            row = conn.execute(read, {"key": f"item-{item}"}).one()
            at = datetime.now(UTC).isoformat()
            conn.execute(write, {"item": row.id, "choice": "left", "at": at})
        return {"item": row.id}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def floor_client(client: Any, stats: Stats, deadline: float, rng: random.Random) -> None:
    while time.monotonic() < deadline:
        item = rng.randint(1, FLOOR_ITEMS)
        with suppress(RequestFailedError):
            await timed(stats, "floor", partial(client.post, f"/floor/{item}"))
            stats.trials_done.append(time.monotonic())


async def drive_floor(
    base_urls: list[str], *, clients: int, duration: float, seed: int
) -> tuple[Stats, float]:
    """`clients` loops, spread over the ports as the evaluators are."""
    stats = Stats()
    started = time.monotonic()
    deadline = started + duration
    per_port = -(-clients // len(base_urls))
    pools = [Client(url, connections=per_port, timeout=60) for url in base_urls]
    try:
        rng = random.Random(seed)
        await asyncio.gather(
            *(floor_client(pools[i % len(pools)], stats, deadline, rng) for i in range(clients))
        )
    finally:
        for pool in pools:
            await pool.aclose()
    return stats, time.monotonic() - started
