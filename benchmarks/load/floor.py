"""The floors the app is measured against in saturation mode, on the same database kind, served
the same way (`benchmarks.load.floor:create_floor_app`), and the clients loading them:

- the minimal endpoint: one indexed read and one insert per request in one transaction;
- the submit-shaped floor: the writes of one answer, done naively, one request per trial as
  vidarena's submit is: read the evaluator by its key, update the answered trial, insert its six
  votes (one executemany, as the app sends them), insert the evaluator's next trial, commit.
  Its tables have the app's unique constraints ((trial, criterion) for votes, (evaluator,
  position) for trials). What it leaves out is what vidarena does beyond those writes: choosing
  the next pair (balanced coverage, sides, no repeats), checks, counters, tokens, the prefetch.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from contextlib import suppress
from functools import partial
from typing import Any

from pydantic import BaseModel

from benchmarks.load.client import Client, RequestFailedError, timed
from benchmarks.load.config import CHOICES, FLOOR_ITEMS
from benchmarks.load.stats import Stats

FLOOR_APP = "benchmarks.load.floor:create_floor_app"


class Answer(BaseModel):
    """The submit-shaped floor's body, as a submit's: one answer per criterion."""

    votes: dict[str, str]


def prepare_floor(url: str) -> None:
    """Both floors' tables: FLOOR_ITEMS items (minimal), FLOOR_ITEMS evaluators with one open
    trial each, trial id = evaluator id (submit-shaped)."""
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
        conn.execute(
            sa.text(
                "CREATE TABLE floor_evaluator (id INTEGER PRIMARY KEY, key VARCHAR(64) NOT NULL "
                "UNIQUE)"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TABLE floor_trial (id {id_type} PRIMARY KEY, evaluator_id INTEGER NOT "
                "NULL, position INTEGER NOT NULL, assigned_at VARCHAR(40) NOT NULL, answered_at "
                "VARCHAR(40), UNIQUE (evaluator_id, position))"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TABLE floor_vote (id {id_type} PRIMARY KEY, trial_id INTEGER NOT NULL, "
                "criterion VARCHAR(64) NOT NULL, choice VARCHAR(8) NOT NULL, "
                "UNIQUE (trial_id, criterion))"
            )
        )
        conn.execute(
            sa.text("INSERT INTO floor_evaluator (id, key) VALUES (:id, :key)"),
            [{"id": i, "key": f"evaluator-{i}"} for i in range(1, FLOOR_ITEMS + 1)],
        )
        conn.execute(
            sa.text(
                "INSERT INTO floor_trial (id, evaluator_id, position, assigned_at) "
                "VALUES (:id, :id, 1, 'start')"
            ),
            [{"id": i} for i in range(1, FLOOR_ITEMS + 1)],
        )
        if engine.dialect.name == "postgresql":  # explicit ids above: move the sequence on
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('floor_trial', 'id'), {FLOOR_ITEMS})"
                )
            )
    engine.dispose()


def create_floor_app():  # type: ignore[no-untyped-def]
    """The floors: FastAPI, sync endpoints (threadpool, like the app's), SQLAlchemy on the same
    engine settings as the app (app.db.make_engine: WAL and BEGIN IMMEDIATE on SQLite, a pool
    on PostgreSQL), no middleware. `/floor/{item}`: one indexed read and one insert in one
    transaction. `/floor/submit/{evaluator}/{trial}`: one answer's writes (see the module)."""
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
    app.state.engine = engine

    @app.post("/floor/{item}")
    def floor(item: int) -> dict[str, int]:
        with engine.begin() as conn:
            row = conn.execute(read, {"key": f"item-{item}"}).one()
            at = datetime.now(UTC).isoformat()
            conn.execute(write, {"item": row.id, "choice": "left", "at": at})
        return {"item": row.id}

    read_evaluator = sa.text("SELECT id FROM floor_evaluator WHERE key = :key")
    answer_trial = sa.text(
        "UPDATE floor_trial SET answered_at = :at WHERE id = :trial AND evaluator_id = :evaluator"
        " AND answered_at IS NULL RETURNING position"
    )
    insert_votes = sa.text(
        "INSERT INTO floor_vote (trial_id, criterion, choice) VALUES (:trial, :criterion, :choice)"
    )
    insert_trial = sa.text(
        "INSERT INTO floor_trial (evaluator_id, position, assigned_at) "
        "VALUES (:evaluator, :position, :at) RETURNING id"
    )

    @app.post("/floor/submit/{evaluator}/{trial}")
    def floor_submit(evaluator: int, trial: int, answer: Answer) -> dict[str, int]:
        at = datetime.now(UTC).isoformat()
        with engine.begin() as conn:
            evaluator_id = conn.execute(read_evaluator, {"key": f"evaluator-{evaluator}"}).one().id
            position = conn.execute(
                answer_trial, {"trial": trial, "evaluator": evaluator_id, "at": at}
            ).scalar_one()
            conn.execute(
                insert_votes,
                [{"trial": trial, "criterion": k, "choice": v} for k, v in answer.votes.items()],
            )
            next_trial = conn.execute(
                insert_trial, {"evaluator": evaluator_id, "position": position + 1, "at": at}
            ).scalar_one()
        return {"trial": next_trial}

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


async def submit_floor_client(
    client: Any, stats: Stats, deadline: float, evaluator: int, criteria: list[str]
) -> None:
    """One evaluator of the submit-shaped floor: answers its open trial, then the next."""
    trial = evaluator  # prepare_floor: each evaluator's first trial has its id
    n = 0
    while time.monotonic() < deadline:
        votes = {k: CHOICES[(n + i) % 3] for i, k in enumerate(criteria)}
        try:
            response = await timed(
                stats,
                "floor",
                partial(client.post, f"/floor/submit/{evaluator}/{trial}", json={"votes": votes}),
            )
        except RequestFailedError:
            return  # its trial is lost: counted, this client stops
        stats.trials_done.append(time.monotonic())
        stats.votes_sent += len(votes)
        trial = response.json()["trial"]
        n += 1


async def drive_floor(
    base_urls: list[str],
    *,
    clients: int,
    duration: float,
    seed: int,
    criteria: list[str] | None = None,
) -> tuple[Stats, float]:
    """`clients` loops, spread over the ports as the evaluators are: the minimal floor, or with
    `criteria` the submit-shaped one (client i is evaluator i + 1, answering every criterion)."""
    if clients > FLOOR_ITEMS:
        raise ValueError(f"at most {FLOOR_ITEMS} floor clients")
    stats = Stats()
    started = time.monotonic()
    deadline = started + duration
    per_port = -(-clients // len(base_urls))
    pools = [Client(url, connections=per_port, timeout=60) for url in base_urls]
    try:
        rng = random.Random(seed)
        await asyncio.gather(
            *(
                submit_floor_client(pools[i % len(pools)], stats, deadline, i + 1, criteria)
                if criteria
                else floor_client(pools[i % len(pools)], stats, deadline, rng)
                for i in range(clients)
            )
        )
    finally:
        for pool in pools:
            await pool.aclose()
    return stats, time.monotonic() - started
