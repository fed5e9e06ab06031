"""Real render workers for tests: `vidarena worker` processes on the embedded broker or Redis.

Only the model weights are stand-ins (tiny random-weight models built from config); the broker,
database, storage and worker process are real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.config import Settings
from tests.conftest import require_service

REDIS_URL = os.environ.get("VIDARENA_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def redis_broker_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        require_service("Redis", f"{REDIS_URL}: {exc}")
    # A database of its own per test run, so parallel runs never share a queue.
    return f"{REDIS_URL}/{(uuid.uuid4().int % 14) + 1}"


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "VIDARENA_DATABASE_URL": settings.database_url,
        "VIDARENA_BROKER_URL": settings.broker_url,
        "VIDARENA_STORAGE_URL": settings.storage_url,
        "VIDARENA_VAR_DIR": str(settings.var_dir),
        "VIDARENA_RENDER_LEASE_SECONDS": str(settings.render_lease_seconds),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


@contextmanager
def running_worker(settings: Settings, log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "--loglevel", "INFO"],
            env=worker_env(settings, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def kill_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole worker: no cleanup, no acknowledgement, exactly like a crash."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, log: Path) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}; worker log:\n{tail}")
