"""Real services the tests need: the skip-or-fail policy, free loopback ports and Redis (the
machine's shared server, or a private redis-server to stop and start)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_URL = os.environ.get("VIDARENA_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def require_service(name: str, reason: str) -> None:
    """Skip locally, fail loudly in CI: CI must exercise every real service."""
    import pytest

    if IN_CI:
        pytest.fail(f"{name} is required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{name} unavailable: {reason}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_broker_url() -> str:
    """A Redis database of its own on the machine's server (skips or fails when unreachable)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        require_service("Redis", f"{REDIS_URL}: {exc}")
    # A database of its own per test run, so parallel runs never share a queue.
    return f"{REDIS_URL}/{(uuid.uuid4().int % 14) + 1}"


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
