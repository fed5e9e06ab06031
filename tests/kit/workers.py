"""Real render workers for tests: `vidarena worker` processes on the embedded broker or Redis.

Only the model weights are stand-ins (tiny random-weight models built from config); the broker,
database, storage and worker process are real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.kit.servers import kill_group, stop_group

if TYPE_CHECKING:
    from app.config import Settings


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
            stop_group(process)


def kill_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole worker: no cleanup, no acknowledgement, exactly like a crash."""
    kill_group(process)


def encoder_processes(worker: subprocess.Popen[bytes]) -> list[int]:
    """Pids of a worker's encoder processes: multiprocessing's spawned children in its process
    group (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        process_group = int(stat.rsplit(")", 1)[1].split()[2])  # after state and ppid
        if process_group == worker.pid and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def signal_processes(pids: list[int], signum: int) -> None:
    for pid in pids:
        os.kill(pid, signum)


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, log: Path) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    import pytest

    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}; worker log:\n{tail}")
