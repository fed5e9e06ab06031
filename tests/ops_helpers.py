"""Helpers shared by the operations tests (tests/test_ops_*.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.config import Settings
from tests.conftest import free_port, require_service


def configured(settings: Settings, **update: Any) -> Settings:
    """A validated copy (model_copy(update=…) would skip validation: plain str secrets)."""
    return type(settings).model_validate(settings.model_dump() | update)


class PrivateRedis:
    """A redis-server of our own on a free port, to stop and start without touching the
    machine's shared Redis."""

    def __init__(self, tmp_dir: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            require_service("redis-server", "the redis-server binary is not installed")
        self.binary = binary
        self.port = free_port()
        self.dir = tmp_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except Exception:
            return False

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(port=self.port, socket_connect_timeout=1)


@contextmanager
def private_redis(tmp_dir: str) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def env_without_vidarena() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VIDARENA_")}


def wait_until_healthy(process: subprocess.Popen, base_url: str, log: Path, what: str) -> None:
    """Wait (60 s at most) until a server process started by a test answers /healthz; fail with
    the end of its log if it exits or never does."""
    import httpx
    import pytest

    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
