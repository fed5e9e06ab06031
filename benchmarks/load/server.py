"""The server under load: W processes of `uvicorn APP --factory`, each on a port of its own (as W
replicas behind a load balancer), in production mode with rate limits off; and its own view of
the latencies (/metrics, every process summed)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load.config import ADMIN_PASSWORD, METRICS_TOKEN, SECRET_KEY
from benchmarks.load.cpu import cpu_seconds
from tests.kit.config import env_without_vidarena
from tests.kit.paths import ROOT
from tests.kit.servers import spawn_uvicorn, stop_group, wait_until_healthy


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


@contextmanager
def uvicorn_replicas(
    app: str, env: dict[str, str], *, workers: int, pin: bool, log: Path
) -> Iterator[Server]:
    """`workers` uvicorn processes of `app`, a port each, healthy, pinned a core each when `pin`,
    warmed up; stopped (SIGTERM, then SIGKILL) on exit."""
    import httpx

    server = Server(processes=[], base_urls=[], log=log)
    try:
        for _ in range(workers):
            process, base_url = spawn_uvicorn(
                app, env=env, log=log, options=["--backlog", "4096", "--app-dir", str(ROOT)]
            )
            server.processes.append(process)
            server.base_urls.append(base_url)
        for process, base_url in zip(server.processes, server.base_urls, strict=True):
            wait_until_healthy(process, base_url, log, "uvicorn")
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
            stop_group(process)


def server_env(url: str, workdir: Path, *, floor_url: str | None = None) -> dict[str, str]:
    metrics_dir = workdir / f"metrics-{uuid.uuid4().hex[:6]}"
    metrics_dir.mkdir()
    env = env_without_vidarena()
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


def scrape_shared_lock_seconds(server: Server) -> float:
    """Seconds any lock shared by a whole study was held, all worker processes summed: SQLite's
    database-wide write lock (`vidarena_sqlite_write_lock_seconds_total`); PostgreSQL has none
    since the assignment moved to row locks (app/rating/service.py, "Concurrency"), so 0."""
    import httpx

    text = httpx.get(
        server.base_url + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=30,
    ).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vidarena_sqlite_write_lock_seconds_total")
    )
