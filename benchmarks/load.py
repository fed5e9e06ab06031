"""Load: simulated evaluators through the real HTTP rating flow against uvicorn, on SQLite and
PostgreSQL, in two modes, with a reconciliation of every vote at the end.

Each simulated evaluator does what the browser's rating page (static/rate.js) does: join with a
personal invite (`POST /r/<key>/api/join`, bearer token), `GET /api/next` for the first pair
(its answer carries the pair after it, assigned ahead), then for every pair: fetch both clips of
the following pair (`GET /r/<key>/media/<token>`) while "watching" this one, and submit this
pair's votes on every criterion (`POST /api/trials/<id>/votes`). A submit's answer carries the
next pair and the one after it; only when an answer has none after it (the last pair) is it
asked for (`GET /api/next?after=<id>`). An evaluator who reaches the study's quota is replaced by
a newly invited one.

- **realistic**: N evaluators (200 and 1000 by default) arrive at uniform random times over the
  first `--ramp` seconds (30: 1000 evaluators in 30 s is already a crowd answering one
  announcement; `--ramp 7` is a flash crowd) and think `--think` seconds (uniform) per pair, for
  `--duration` seconds: p50/p95/p99 latency of next-pair and submit over the whole run, ramp
  included (target: p99 < 50 ms at 1000 evaluators on 2 cores);
- **saturation**: `--clients` evaluators with no think time: trials/s sustained, measured in the
  same run beside a floor, a minimal FastAPI endpoint on the same database kind, served the same
  way, doing one indexed read and one insert per request in one transaction (target: at least
  half the floor).

Either way: every request must succeed, and votes sent (successful submits x criteria) = votes
stored (SQL count) = votes exported (rows of `vidarena export votes SLUG -o FILE`).

The server under load is W processes of `uvicorn app.main:create_app --factory`, each on a port
of its own with the simulated evaluators spread evenly over them (as W replicas behind a load
balancer; see `Server` for why not `--workers W`), with `VIDARENA_ENV=production`, rate limits
disabled (`VIDARENA_RATE_LIMIT_*_PER_MINUTE=0`: every simulated evaluator joins from 127.0.0.1),
`VIDARENA_LOG_LEVEL=WARNING` (no access lines) and `PROMETHEUS_MULTIPROC_DIR` set as
docker-compose.yml does. `--pin` pins each uvicorn process to a core of its own with `taskset`
(docs/measurements.md: sync endpoints' threads fight over the GIL when one process spreads
across cores).
The load generator (asyncio + aiohttp) runs on the same machine and its CPU use is reported
beside the server's. Loopback only; every phase stops by
itself after its duration.

    .venv/bin/python benchmarks/load.py                       # everything: about 10 minutes
    .venv/bin/python benchmarks/load.py --db sqlite --mode saturation --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
try:
    import sniffio  # noqa: F401
except ImportError:  # httpcore tries `import sniffio` on every request; a miss searches sys.path
    sys.modules["sniffio"] = None  # type: ignore[assignment]

STUDY_FILE = ROOT / "examples/lightning-vs-animatediff/study.toml"
POSTGRES_URL = os.environ.get(
    "VIDARENA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SECRET_KEY = "load-benchmark-" + uuid.uuid4().hex  # fresh per run; nothing outside uses it
ADMIN_PASSWORD = "load-benchmark-admin-" + uuid.uuid4().hex[:8]
METRICS_TOKEN = "load-benchmark-metrics-" + uuid.uuid4().hex[:8]
QUOTA = 20  # the example study's trials_per_evaluator
EVALUATORS_PER_CLIENT = 25  # httpcore's pool scans every connection per request: keep pools small
FLOOR_ITEMS = 1000
CHOICES = ("left", "right", "tie")


# --- databases ----------------------------------------------------------------------------------


@contextmanager
def fresh_database(
    kind: str, workdir: Path, *, name: str = "vidarena", migrate: bool = True
) -> Iterator[str]:
    """A new (migrated) database of `kind`; a PostgreSQL one is dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from app.db import upgrade_schema

    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'{name}.sqlite'}"
        if migrate:
            upgrade_schema(url)
        yield url
        return
    name = f"{name}_load_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade_schema(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def gif_bytes(seed: int, *, frames: int = 16, size: int = 64) -> bytes:
    """A distinct 16-frame 64x64 GIF (noise, so it weighs what a tiny render does: ~65 KB)."""
    from PIL import Image

    rng = random.Random(seed)
    images = [
        Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).quantize(64)
        for _ in range(frames)
    ]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=125)
    return out.getvalue()


@dataclass
class Seeded:
    study_id: int
    slug: str
    key: str
    criteria: list[str]
    gif_bytes: int


def seed_study(url: str, media_dir: Path) -> Seeded:
    """The example study (2 arms, 100 prompts, 6 criteria), open, every clip done with a GIF in
    local storage, matchups made, quota QUOTA pairs per evaluator."""
    from sqlalchemy import select

    from app.clips.models import Clip, ClipStatus
    from app.db import make_engine, session_factory, utcnow
    from app.rating import service as rating_service
    from app.rating import tokens
    from app.storage import LocalStorage
    from app.studies import service as studies_service
    from app.studies.models import Prompt, StudyStatus
    from app.studies.studyfile import load_study_file

    engine = make_engine(url)
    storage = LocalStorage(media_dir)
    sizes = []
    with session_factory(engine)() as session:
        study = studies_service.create(session=session, draft=load_study_file(STUDY_FILE))
        study.status = StudyStatus.open
        study.settings = {**study.settings, "trials_per_evaluator": QUOTA}
        session.flush()
        clips = session.scalars(
            select(Clip)
            .join(Prompt, Prompt.id == Clip.prompt_id)
            .where(Prompt.study_id == study.id)
        )
        for clip in clips:
            data = gif_bytes(clip.id)
            stored = storage.put(data)
            sizes.append(stored.size)
            clip.status = ClipStatus.done
            clip.storage_key, clip.sha256, clip.size_bytes = stored.key, stored.sha256, stored.size
            clip.num_frames, clip.width, clip.height = 16, 64, 64
            clip.finished_at = utcnow()
        session.flush()
        rating_service.ensure_matchups(session=session, study=study)
        session.commit()
        seeded = Seeded(
            study_id=study.id,
            slug=study.slug,
            key=tokens.study_key(SECRET_KEY, study.id),
            criteria=list(study.criterion_keys),
            gif_bytes=sum(sizes) // len(sizes),
        )
    if engine.dialect.name == "postgresql":
        # Fresh statistics, as autovacuum has them once a study's clips have rendered over
        # time. Without them the planner takes `clip.status = 'done'` for one row and the
        # assignment query nests loops over clip x clip (26 ms instead of 1 ms; see
        # docs/benchmarks.md).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return seeded


def votes_stored(url: str, study_id: int) -> int:
    from sqlalchemy import func, select

    from app.db import make_engine
    from app.rating.models import Matchup, Trial, Vote

    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(
            select(func.count(Vote.id))
            .join(Trial, Trial.id == Vote.trial_id)
            .join(Matchup, Matchup.id == Trial.matchup_id)
            .where(Matchup.study_id == study_id)
        )
    engine.dispose()
    return int(n or 0)


def all_or_nothing_violations(url: str, study_id: int, criteria: int) -> int:
    """Trials answered without every vote, or with votes and no answer: must be 0."""
    from sqlalchemy import func, select

    from app.db import make_engine
    from app.rating.models import Matchup, Trial, Vote

    engine = make_engine(url)
    per_trial = (
        select(Trial.id, Trial.answered_at, func.count(Vote.id).label("n"))
        .join(Matchup, Matchup.id == Trial.matchup_id)
        .outerjoin(Vote, Vote.trial_id == Trial.id)
        .where(Matchup.study_id == study_id)
        .group_by(Trial.id, Trial.answered_at)
        .subquery()
    )
    with engine.connect() as conn:
        bad = conn.scalar(
            select(func.count()).where(
                ((per_trial.c.answered_at.is_(None)) & (per_trial.c.n != 0))
                | ((per_trial.c.answered_at.is_not(None)) & (per_trial.c.n != criteria))
            )
        )
    engine.dispose()
    return int(bad or 0)


def votes_exported(env: dict[str, str], slug: str, out: Path) -> int:
    """Rows of `vidarena export votes SLUG -o FILE` (the researchers' export command)."""
    subprocess.run(
        [sys.executable, "-m", "app", "export", "votes", slug, "-o", str(out)],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    with out.open(encoding="utf-8-sig", newline="") as file:
        return sum(1 for _ in csv.reader(file)) - 1  # minus the header


# --- the floor: one indexed read and one insert -------------------------------------------------


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


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds of this machine's PostgreSQL processes (the server shares the 2 cores)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            text = stat.read_text()
            if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
                fields = text.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Server:
    """W uvicorn processes, each on a port of its own, as W replicas behind a load balancer.

    Not `uvicorn --workers W`: its workers share one listening socket and asyncio accepts up to
    100 pending connections per wake-up, so a burst of keep-alive connections (32 clients
    connecting at once) often lands on one worker for the whole run. Measured: one worker at
    0.97 cores and the other idle, with half the trials/s of a balanced run. Evaluators are
    spread round-robin over the ports instead (the load generator's clients, one port each)."""

    processes: list[subprocess.Popen[bytes]]
    base_urls: list[str]
    log: Path

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    @property
    def workers(self) -> list[int]:
        return [p.pid for p in self.processes]

    def cpu(self) -> float:
        return sum(self.worker_cpu())

    def worker_cpu(self) -> list[float]:
        return [cpu_seconds(p) for p in self.workers]


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"uvicorn did not start ({process.args}):\n{tail}")
        try:
            if httpx.get(base_url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


@contextmanager
def uvicorn_server(
    app: str, env: dict[str, str], *, workers: int, pin: bool, log: Path, app_dir: Path = ROOT
) -> Iterator[Server]:
    import httpx

    server = Server(processes=[], base_urls=[], log=log)
    try:
        for _ in range(workers):
            port = free_port()
            command = [
                sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", "--no-access-log",
                "--backlog", "4096", "--app-dir", str(app_dir),
            ]  # fmt: skip
            with log.open("ab") as out:
                server.processes.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        cwd=ROOT,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            server.base_urls.append(f"http://127.0.0.1:{port}")
        for process, base_url in zip(server.processes, server.base_urls, strict=True):
            _wait_healthy(process, base_url, log)
        if pin:
            cores = os.cpu_count() or 1
            for i, pid in enumerate(server.workers):
                subprocess.run(
                    ["taskset", "-a", "-p", "-c", str(i % cores), str(pid)],
                    check=True,
                    capture_output=True,
                )
        # Every process warms up (imports, pools) before the clock starts.
        for base_url in server.base_urls:
            for _ in range(4):
                httpx.get(base_url + "/healthz", timeout=5)
        yield server
    finally:
        for process in server.processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in server.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def server_env(url: str, workdir: Path, *, floor_url: str | None = None) -> dict[str, str]:
    metrics_dir = workdir / f"metrics-{uuid.uuid4().hex[:6]}"
    metrics_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDARENA_")}
    env.update(
        {
            "VIDARENA_ENV": "production",
            "VIDARENA_DATABASE_URL": url,
            "VIDARENA_VAR_DIR": str(workdir / "var"),
            "VIDARENA_STORAGE_URL": str(workdir / "media"),
            "VIDARENA_BROKER_URL": f"filesystem://{workdir / 'var' / 'broker'}",
            "VIDARENA_SECRET_KEY": SECRET_KEY,
            "VIDARENA_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VIDARENA_METRICS_TOKEN": METRICS_TOKEN,
            "VIDARENA_LOG_LEVEL": "WARNING",
            "VIDARENA_RATE_LIMIT_JOIN_PER_MINUTE": "0",
            "VIDARENA_RATE_LIMIT_SUBMIT_PER_MINUTE": "0",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if floor_url:
        env["LOAD_FLOOR_DATABASE_URL"] = floor_url
    for name in ("WEB_THREADS", "RATING_THREADS"):  # e.g. LOAD_RATING_THREADS=1
        if os.environ.get(f"LOAD_{name}"):
            env[f"VIDARENA_{name}"] = os.environ[f"LOAD_{name}"]
    return env


# --- the load generator -------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    busy: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # 503s waited out
    error_samples: list[str] = field(default_factory=list)
    trials_done: list[float] = field(default_factory=list)  # monotonic time of each ok submit
    votes_sent: int = 0
    joins: int = 0

    def error(self, what: str, detail: str) -> None:
        self.errors[what] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{what}: {detail[:300]}")


class RequestFailedError(Exception):
    pass


@dataclass
class Reply:
    status_code: int
    content: bytes
    retry_after: str | None = None

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """A keep-alive HTTP client for the simulated evaluators: aiohttp (its C parser costs a
    fraction of httpx's CPU per request, and the load generator shares the server's 2 cores).
    No cookie jar: each evaluator is its bearer token; a shared jar would hand one evaluator's
    cookie to all."""

    def __init__(self, base_url: str, *, connections: int, timeout: float) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=connections,
            keepalive_timeout=2.0,  # well under uvicorn's 5 s: never reuse one it is closing
        )
        self.session = aiohttp.ClientSession(
            base_url=base_url,
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def request(self, method: str, url: str, **kwargs: Any) -> Reply:
        async with self.session.request(method, url, **kwargs) as response:
            return Reply(
                response.status, await response.read(), response.headers.get("Retry-After")
            )

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


BUSY_RETRIES = 5  # as static/rate.js: a 503 (a full class of work) is waited out, then retried


async def timed(stats: Stats, what: str, call) -> Any:  # type: ignore[no-untyped-def]
    """`call()` (a coroutine function) timed from the first try to the answer, retried like the
    rating page after a 503 with Retry-After (each one counted in `stats.busy`)."""
    started = time.perf_counter()
    for attempt in range(BUSY_RETRIES + 1):
        try:
            response = await call()
        except Exception as exc:
            stats.error(what, f"{type(exc).__name__}: {exc}")
            raise RequestFailedError(what) from exc
        if response.status_code != 503 or attempt == BUSY_RETRIES:
            break
        stats.busy[what] += 1
        await asyncio.sleep(float(response.retry_after or 1) * (1 + random.random()))
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        stats.error(what, f"{response.status_code} {response.text}")
        raise RequestFailedError(what)
    stats.latencies[what].append(elapsed)
    return response


@dataclass
class Flow:
    clients: list[Any]
    seeded: Seeded
    stats: Stats
    deadline: float
    think: tuple[float, float]
    rng: random.Random

    @property
    def base(self) -> str:
        return f"/r/{self.seeded.key}"

    async def join(self, client: Any) -> dict[str, str]:
        from app.rating import tokens

        invite, _ = tokens.new_invite(SECRET_KEY, self.seeded.study_id)
        response = await timed(
            self.stats,
            "join",
            lambda: client.post(f"{self.base}/api/join", json={"invite": invite}),
        )
        self.stats.joins += 1
        return {"Authorization": f"Bearer {response.json()['evaluator_token']}"}

    async def media(self, client: Any, trial: dict[str, Any]) -> None:
        left, right = await asyncio.gather(
            timed(self.stats, "media", lambda: client.get(trial["left"]["url"])),
            timed(self.stats, "media", lambda: client.get(trial["right"]["url"])),
        )
        if not (left.content[:6] == right.content[:6] == b"GIF89a"):
            self.stats.error("media", "not a GIF")
            raise RequestFailedError("media")

    async def think_time(self) -> None:
        low, high = self.think
        if high > 0:
            await asyncio.sleep(self.rng.uniform(low, high))

    async def evaluator(self, slot: int, start_delay: float) -> None:
        """Evaluators, one after another in this slot, until the deadline."""
        client = self.clients[slot % len(self.clients)]
        await asyncio.sleep(start_delay)
        while time.monotonic() < self.deadline:
            try:
                await self.one_evaluator(client)
            except RequestFailedError:
                await asyncio.sleep(0.5)  # counted; carry on with a new evaluator

    async def one_evaluator(self, client: Any) -> None:
        headers = await self.join(client)
        api = f"{self.base}/api"
        first = await timed(self.stats, "next", lambda: client.get(f"{api}/next", headers=headers))
        current = first.json()
        if current["status"] != "trial":
            self.stats.error("next", f"no first pair: {current}")
            raise RequestFailedError("next")
        await self.media(client, current["trial"])
        step = 0
        while time.monotonic() < self.deadline:
            trial = current["trial"]
            # Prefetch the following pair and its clips while "watching" this one: a submit's
            # answer carries it (`after`); for the first pair it is asked for.
            if current.get("after"):
                upcoming = {"status": "trial", "trial": current["after"]}
            else:
                ahead = await timed(
                    self.stats,
                    "next",
                    partial(
                        client.get, f"{api}/next", params={"after": trial["id"]}, headers=headers
                    ),
                )
                upcoming = ahead.json()
            if upcoming["status"] == "trial":
                await self.media(client, upcoming["trial"])
            await self.think_time()
            votes = {
                k: CHOICES[(trial["id"] + step + i) % 3] for i, k in enumerate(self.seeded.criteria)
            }
            answer = await timed(
                self.stats,
                "submit",
                partial(
                    client.post,
                    f"{api}/trials/{trial['id']}/votes",
                    json={"votes": votes},
                    headers=headers,
                ),
            )
            self.stats.votes_sent += len(votes)
            self.stats.trials_done.append(time.monotonic())
            step += 1
            current = answer.json()["next"]
            if current["status"] == "done":
                return  # quota reached: a new evaluator takes this slot
            if current["status"] != "trial" or (
                upcoming["status"] == "trial" and current["trial"]["id"] != upcoming["trial"]["id"]
            ):
                self.stats.error("submit", f"unexpected next pair: {current}")
                raise RequestFailedError("submit")


async def floor_client(client: Any, stats: Stats, deadline: float, rng: random.Random) -> None:
    while time.monotonic() < deadline:
        item = rng.randint(1, FLOOR_ITEMS)
        with suppress(RequestFailedError):
            await timed(stats, "floor", partial(client.post, f"/floor/{item}"))
            stats.trials_done.append(time.monotonic())


def run_async(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


async def drive_rating(
    base_urls: list[str],
    seeded: Seeded,
    *,
    evaluators: int,
    duration: float,
    think: tuple[float, float],
    ramp: float,
    connections: int,
    seed: int,
) -> tuple[Stats, float]:
    stats = Stats()
    started = time.monotonic()
    deadline = started + duration
    # At least one client per port; evaluator i uses client i % len(clients), so each port gets
    # the same number of evaluators.
    groups = -(-evaluators // EVALUATORS_PER_CLIENT)
    groups = -(-groups // len(base_urls)) * len(base_urls)
    per_client = max(1, -(-connections // groups))
    clients = [
        Client(base_urls[i % len(base_urls)], connections=per_client, timeout=60)
        for i in range(groups)
    ]
    try:
        flow = Flow(clients, seeded, stats, deadline, think, random.Random(seed))
        delays = [flow.rng.uniform(0, ramp) for _ in range(evaluators)]  # arrivals
        await asyncio.gather(*(flow.evaluator(i, d) for i, d in enumerate(delays)))
    finally:
        for client in clients:
            await client.aclose()
    return stats, time.monotonic() - started


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


# --- measuring ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of seconds, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1] * 1000


def rate_in_window(times: list[float], start: float, end: float) -> float:
    n = sum(1 for t in times if start <= t < end)
    return n / (end - start) if end > start else 0.0


def scrape_server_latency(server: Server) -> dict[str, tuple[float, float]]:
    """Server-side view from /metrics (all worker processes summed): per route, mean ms and
    the share of requests under 50 ms."""
    import httpx

    text = httpx.get(
        server.base_url + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=30,
    ).text
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    under: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("vidarena_http_request_duration_seconds"):
            continue
        name, value = line.rsplit(" ", 1)
        route = name.split('route="', 1)[1].split('"', 1)[0] if 'route="' in name else ""
        if name.startswith("vidarena_http_request_duration_seconds_sum"):
            sums[route] += float(value)
        elif name.startswith("vidarena_http_request_duration_seconds_count"):
            counts[route] += float(value)
        elif 'le="0.05"' in name:
            under[route] += float(value)
    return {
        route: (1000 * sums[route] / counts[route], under[route] / counts[route])
        for route in counts
        if counts[route]
    }


@dataclass
class Result:
    db: str
    mode: str
    evaluators: int
    duration: float
    stats: Stats
    elapsed: float
    trials_per_s: float
    votes_stored: int
    votes_exported: int
    broken_trials: int
    server_cpu: float
    client_cpu: float
    worker_cpu: list[float]  # cores per uvicorn worker: keep-alive connections stay where accepted
    database_cpu: float  # cores of the local PostgreSQL server (0 for SQLite: in the workers)
    server_view: dict[str, tuple[float, float]]
    floor_per_s: float | None = None
    floor_stats: Stats | None = None
    floor_worker_cpu: list[float] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(self.stats.errors.values()) + (
            sum(self.floor_stats.errors.values()) if self.floor_stats else 0
        )

    @property
    def reconciled(self) -> bool:
        return self.stats.votes_sent == self.votes_stored == self.votes_exported


def measure(
    *,
    db: str,
    mode: str,
    evaluators: int,
    duration: float,
    think: tuple[float, float],
    args: argparse.Namespace,
    workdir: Path,
) -> Result:
    scenario = workdir / f"{db}-{mode}-{evaluators}"
    scenario.mkdir()
    (scenario / "var").mkdir()
    with fresh_database(db, scenario) as url:
        seeded = seed_study(url, scenario / "media")
        env = server_env(url, scenario)
        floor_per_s = floor_stats = None
        floor_worker_cpu: list[float] = []
        if mode == "saturation":
            # The floor first, on a database of the same kind, served the same way.
            with fresh_database(db, scenario, name="floor", migrate=False) as furl:
                prepare_floor(furl)
                fenv = server_env(url, scenario, floor_url=furl)
                with uvicorn_server(
                    "load:create_floor_app",
                    fenv,
                    workers=args.workers,
                    pin=args.pin,
                    log=scenario / "floor.log",
                    app_dir=ROOT / "benchmarks",
                ) as floor_server:
                    floor_before = floor_server.worker_cpu()
                    floor_stats, floor_elapsed = run_async(
                        drive_floor(
                            floor_server.base_urls,
                            clients=evaluators,
                            duration=duration,
                            seed=args.seed,
                        )
                    )
                    floor_worker_cpu = [
                        (after - before) / floor_elapsed
                        for before, after in zip(
                            floor_before, floor_server.worker_cpu(), strict=True
                        )
                    ]
                start = min(floor_stats.trials_done, default=0) + args.warmup
                floor_per_s = rate_in_window(
                    floor_stats.trials_done, start, start + duration - args.warmup
                )
        log = scenario / "server.log"
        with uvicorn_server(
            "app.main:create_app", env, workers=args.workers, pin=args.pin, log=log
        ) as server:
            server_before, client_before = server.cpu(), cpu_seconds(os.getpid())
            workers_before = server.worker_cpu()
            database_before = postgres_cpu()
            stats, elapsed = run_async(
                drive_rating(
                    server.base_urls,
                    seeded,
                    evaluators=evaluators,
                    duration=duration,
                    think=think,
                    ramp=args.ramp if mode == "realistic" else 0.0,
                    connections=args.connections or evaluators,
                    seed=args.seed,
                )
            )
            server_cpu = (server.cpu() - server_before) / elapsed
            client_cpu = (cpu_seconds(os.getpid()) - client_before) / elapsed
            worker_cpu = [
                (after - before) / elapsed
                for before, after in zip(workers_before, server.worker_cpu(), strict=True)
            ]
            database_cpu = (postgres_cpu() - database_before) / elapsed if db != "sqlite" else 0.0
            server_view = scrape_server_latency(server)
        if mode == "saturation":
            start = min(stats.trials_done, default=0) + args.warmup
            per_s = rate_in_window(stats.trials_done, start, start + duration - args.warmup)
        else:
            per_s = len(stats.trials_done) / elapsed
        stored = votes_stored(url, seeded.study_id)
        exported = votes_exported(env, seeded.slug, scenario / "votes.csv")
        broken = all_or_nothing_violations(url, seeded.study_id, len(seeded.criteria))
        args.gif_bytes = seeded.gif_bytes
    return Result(
        db=db,
        mode=mode,
        evaluators=evaluators,
        duration=duration,
        stats=stats,
        elapsed=elapsed,
        trials_per_s=per_s,
        votes_stored=stored,
        votes_exported=exported,
        broken_trials=broken,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        worker_cpu=worker_cpu,
        database_cpu=database_cpu,
        server_view=server_view,
        floor_per_s=floor_per_s,
        floor_stats=floor_stats,
        floor_worker_cpu=floor_worker_cpu,
    )


# --- reporting ----------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, q):.1f}" for q in (50, 95, 99))


def reconciliation(r: Result) -> str:
    mark = "✓" if r.reconciled and not r.broken_trials else "✗ MISMATCH"
    return f"{r.stats.votes_sent:,} / {r.votes_stored:,} / {r.votes_exported:,} {mark}"


def realistic_table(results: list[Result], think: tuple[float, float]) -> str:
    lines = [
        "| database | evaluators | trials/s | next pair p50 / p95 / p99 ms | submit p50 / p95 / "
        "p99 ms | media p99 ms | join p99 ms | errors | votes sent / stored / exported | "
        "p99 < 50 ms |",
        "|---|---:|---:|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        lat = r.stats.latencies
        worst = max(percentile(lat["next"], 99), percentile(lat["submit"], 99))
        target = "yes" if worst < 50 else f"**no** ({worst:.0f} ms)"
        lines.append(
            f"| {r.db} | {r.evaluators:,} | {r.trials_per_s:.1f} | {ms(lat['next'])} | "
            f"{ms(lat['submit'])} | {percentile(lat['media'], 99):.1f} | "
            f"{percentile(lat['join'], 99):.1f} | {r.errors} | {reconciliation(r)} | {target} |"
        )
    return "\n".join(lines)


def saturation_table(results: list[Result]) -> str:
    lines = [
        "| database | clients | floor trials/s (1 read + 1 insert) | vidarena trials/s | "
        "ratio | next pair p50 / p99 ms | submit p50 / p99 ms | errors | "
        "votes sent / stored / exported | ≥ half the floor |",
        "|---|---:|---:|---:|---:|---|---|---:|---|---|",
    ]
    for r in results:
        lat = r.stats.latencies
        ratio = r.trials_per_s / r.floor_per_s if r.floor_per_s else float("nan")
        lines.append(
            f"| {r.db} | {r.evaluators} | {r.floor_per_s:,.0f} | {r.trials_per_s:,.0f} | "
            f"{ratio:.2f} | {percentile(lat['next'], 50):.1f} / {percentile(lat['next'], 99):.1f}"
            f" | {percentile(lat['submit'], 50):.1f} / {percentile(lat['submit'], 99):.1f} | "
            f"{r.errors} | {reconciliation(r)} | {'yes' if ratio >= 0.5 else '**no**'} |"
        )
    return "\n".join(lines)


def split(cores: list[float]) -> str:
    return " / ".join(f"{c:.2f}" for c in cores) or "-"


def cpu_table(results: list[Result]) -> str:
    lines = [
        "| database | mode | evaluators | server CPU (cores) | per worker | "
        "PostgreSQL CPU (cores) | load generator CPU (cores) | "
        "server-side mean ms: next / submit / media | server-side share < 50 ms: next / submit |",
        "|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for r in results:
        v = r.server_view
        nxt = v.get("/r/{key}/api/next", (float("nan"), float("nan")))
        sub = v.get("/r/{key}/api/trials/{trial_id}/votes", (float("nan"), float("nan")))
        med = v.get("/r/{key}/media/{token}", (float("nan"), float("nan")))
        floor = f" (floor {split(r.floor_worker_cpu)})" if r.floor_worker_cpu else ""
        lines.append(
            f"| {r.db} | {r.mode} | {r.evaluators:,} | {r.server_cpu:.2f} | "
            f"{split(r.worker_cpu)}{floor} | {r.database_cpu:.2f} | {r.client_cpu:.2f} | "
            f"{nxt[0]:.1f} / {sub[0]:.1f} / {med[0]:.1f} | "
            f"{100 * nxt[1]:.1f}% / {100 * sub[1]:.1f}% |"
        )
    return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
        f"load average before the run {load}"
    )


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--mode", choices=["realistic", "saturation", "both"], default="both")
    p.add_argument("--evaluators", default="200,1000", help="realistic mode: comma-separated")
    p.add_argument("--think", default="3,7", help="realistic mode: think seconds per pair, MIN,MAX")
    p.add_argument("--duration", type=float, default=60, help="realistic mode: seconds per run")
    p.add_argument(
        "--ramp",
        type=float,
        default=30,
        help="realistic mode: evaluators arrive at uniform random times over the first RAMP s",
    )
    p.add_argument("--clients", type=int, default=32, help="saturation mode: concurrent clients")
    p.add_argument(
        "--saturation-duration", type=float, default=25, help="saturation mode: seconds per run"
    )
    p.add_argument("--warmup", type=float, default=5, help="saturation: seconds not counted")
    p.add_argument("--workers", type=int, default=2, help="uvicorn processes (a port each)")
    p.add_argument("--pin", action="store_true", help="taskset each uvicorn worker to one core")
    p.add_argument(
        "--connections",
        type=int,
        default=0,
        help="client connection limit (default: one per evaluator, as browsers have their own)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", type=Path, help="keep databases, logs and exports in this folder")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Stopped early (SIGTERM): still stop the servers and drop the databases (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    modes = ["realistic", "saturation"] if args.mode == "both" else [args.mode]
    low, high = (float(x) for x in args.think.split(","))
    evaluator_counts = [int(x) for x in args.evaluators.split(",")]
    command = shlex.join([".venv/bin/python", "benchmarks/load.py", *sys.argv[1:]])
    before = machine()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vidarena-load-", dir=args.keep))
    realistic: list[Result] = []
    saturation: list[Result] = []
    try:
        for db in dbs:
            if "realistic" in modes:
                for n in evaluator_counts:
                    r = measure(
                        db=db, mode="realistic", evaluators=n, duration=args.duration,
                        think=(low, high), args=args, workdir=workdir,
                    )  # fmt: skip
                    realistic.append(r)
                    print(f"# {db} realistic {n}: {r.trials_per_s:.1f} trials/s", file=sys.stderr)
            if "saturation" in modes:
                r = measure(
                    db=db, mode="saturation", evaluators=args.clients,
                    duration=args.saturation_duration, think=(0.0, 0.0), args=args,
                    workdir=workdir,
                )  # fmt: skip
                saturation.append(r)
                print(
                    f"# {db} saturation: {r.trials_per_s:.0f} vs floor {r.floor_per_s:.0f}",
                    file=sys.stderr,
                )
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    pin = "each worker pinned to its own core (taskset)" if args.pin else "not pinned"
    print(f"```sh\n{command}\n```\n")
    print(
        f"Machine: {before}. Server: {args.workers} uvicorn processes, a port each ({pin}), "
        "VIDARENA_ENV=production, rate limits off (VIDARENA_RATE_LIMIT_*_PER_MINUTE=0), "
        f"log level WARNING. Study: the example study (2 arms, 100 prompts, 6 criteria, quota "
        f"{QUOTA} pairs per evaluator), GIFs of {getattr(args, 'gif_bytes', 0) / 1024:.0f} KB. "
        "A trial = both clips of the prefetched pair + submit (its answer carries the next pair "
        "and the one after); an evaluator's first GET next carries the first pair and the one "
        "after; the last pair asks GET next?after (the browser's flow).\n"
    )
    if realistic:
        print(
            f"Realistic: think {low:g} to {high:g} s per pair, {args.duration:g} s per run, "
            f"evaluators arriving at uniform random times over the first {args.ramp:g} s.\n"
        )
        print(realistic_table(realistic, (low, high)) + "\n")
    if saturation:
        print(
            f"Saturation: {args.clients} clients with no think time, "
            f"{args.saturation_duration:g} s per run, the first {args.warmup:g} s not counted.\n"
        )
        print(saturation_table(saturation) + "\n")
    print(cpu_table(realistic + saturation) + "\n")
    problems = []
    for r in realistic + saturation:
        if r.errors or not r.reconciled or r.broken_trials:
            samples = r.stats.error_samples[:]
            if r.floor_stats:
                samples += r.floor_stats.error_samples
            problems.append(
                f"{r.db} {r.mode} {r.evaluators}: {r.errors} errors "
                f"{dict(r.stats.errors)}, votes {reconciliation(r)}, "
                f"{r.broken_trials} partial trials; {samples[:5]}"
            )
    if args.json:
        payload = [
            {
                "db": r.db, "mode": r.mode, "evaluators": r.evaluators,
                "trials_per_s": r.trials_per_s, "floor_per_s": r.floor_per_s,
                "latency_ms": {
                    k: {f"p{q}": percentile(v, q) for q in (50, 95, 99)} | {"n": len(v)}
                    for k, v in r.stats.latencies.items()
                },
                "errors": dict(r.stats.errors), "busy": dict(r.stats.busy),
                "votes_sent": r.stats.votes_sent,
                "votes_stored": r.votes_stored, "votes_exported": r.votes_exported,
                "partial_trials": r.broken_trials, "server_cpu": r.server_cpu,
                "client_cpu": r.client_cpu, "worker_cpu": r.worker_cpu,
                "database_cpu": r.database_cpu,
                "floor_worker_cpu": r.floor_worker_cpu, "server_view": r.server_view,
            }
            for r in realistic + saturation
        ]  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
    if problems:
        print("FAILED:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
