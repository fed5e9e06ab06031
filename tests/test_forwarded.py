"""`vidarena serve` believes X-Forwarded-For only from the proxies VIDARENA_FORWARDED_ALLOW_IPS
names: by default a local client cannot name itself a new address per request to get past the
login throttle (or the join limit, keyed the same way). A real production-mode server process
on its own SQLite database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.kit.admin import csrf_of
from tests.kit.config import env_without_vidarena
from tests.kit.paths import ROOT
from tests.kit.servers import stop_group, wait_until_healthy
from tests.kit.services import free_port

PASSWORD = "a long enough admin password"
FAILURES_ALLOWED = 10  # the login throttle's default, per client address


@contextmanager
def served(tmp_path: Path, **env: str) -> Iterator[str]:
    """`vidarena serve` in production mode; yields its base URL."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    settings = {
        "VIDARENA_ENV": "production",
        "VIDARENA_VAR_DIR": str(tmp_path / "var"),
        "VIDARENA_SECRET_KEY": "forwarded-test-secret-" + "f" * 32,
        "VIDARENA_ADMIN_PASSWORD": PASSWORD,
        "VIDARENA_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-render-worker"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env_without_vidarena() | settings | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base_url, log, "serve")
        yield base_url
    finally:
        stop_group(process)


def wrong_passwords_from(base_url: str, addresses: list[str]) -> list[int]:
    """Statuses of one wrong password per X-Forwarded-For address, all from this machine."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        token = csrf_of(client.get("/admin/login").text)
        return [
            client.post(
                "/admin/login",
                data={"password": "a wrong guess", "csrf_token": token},
                headers={"X-Forwarded-For": address},
            ).status_code
            for address in addresses
        ]


def test_forwarded_addresses_are_believed_only_from_configured_proxies(tmp_path):
    addresses = [f"203.0.113.{i}" for i in range(FAILURES_ALLOWED + 1)]
    with served(tmp_path) as base_url:
        statuses = wrong_passwords_from(base_url, addresses)
    # One client, however many addresses it names: throttled after its tenth failure.
    assert statuses == [401] * FAILURES_ALLOWED + [429]
    with served(tmp_path, VIDARENA_FORWARDED_ALLOW_IPS="127.0.0.1") as base_url:
        statuses = wrong_passwords_from(base_url, addresses)
    # Behind a configured proxy each forwarded address is a client of its own.
    assert statuses == [401] * (FAILURES_ALLOWED + 1)
