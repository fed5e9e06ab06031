"""Servers in processes of their own, as users run them: uvicorn (or `vidarena serve`/`demo`) in
a process group of its own on a free loopback port, waited for until /healthz answers, stopped
(SIGTERM, then SIGKILL) or killed outright (SIGKILL, like a machine losing power) as a group.
Also used by benchmarks/ (nothing here needs pytest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.kit.config import env_without_vidarena
from tests.kit.paths import ROOT
from tests.kit.services import free_port

if TYPE_CHECKING:
    from app.config import Settings


def server_env(settings: Settings) -> dict[str, str]:
    """The environment of a server process on the test's settings (rate limits off)."""
    return {
        **env_without_vidarena(),
        "VIDARENA_ENV": "test",
        "VIDARENA_DATABASE_URL": settings.database_url,
        "VIDARENA_STORAGE_URL": settings.storage_url,
        "VIDARENA_VAR_DIR": str(settings.var_dir),
        "VIDARENA_SECRET_KEY": settings.resolved_secret_key(),
        "VIDARENA_ADMIN_PASSWORD": settings.resolved_admin_password(),
        "VIDARENA_RATE_LIMIT_JOIN_PER_MINUTE": "0",
        "VIDARENA_RATE_LIMIT_SUBMIT_PER_MINUTE": "0",
        "VIDARENA_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def spawn_uvicorn(
    app: str,
    *,
    env: dict[str, str],
    log: Path,
    workers: int | None = None,
    options: Sequence[str] = (),
    cwd: Path = ROOT,
) -> tuple[subprocess.Popen[bytes], str]:
    """`uvicorn APP --factory` on a free port in a process group of its own, its output
    appended to `log`; returns the process and its base URL (not yet waited for)."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1",
        "--port", str(port),
        *(["--workers", str(workers)] if workers is not None else []),
        "--log-level", "warning", "--no-access-log", *options,
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, f"http://127.0.0.1:{port}"


def wait_until_healthy(
    process: subprocess.Popen, base_url: str, log: Path, what: str, *, timeout: float = 60
) -> None:
    """Wait (60 s at most) until a server process answers /healthz; raise RuntimeError with the
    end of its log if it exits or never does."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} did not start ({process.args}):\n{tail}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)


@contextmanager
def uvicorn_server(
    settings: Settings, log: Path, *, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    """The app (`app.main:create_app`) under `uvicorn --workers W` on the test's settings;
    yields the process and its base URL, and SIGKILLs the group on exit."""
    process, base_url = spawn_uvicorn(
        "app.main:create_app", env=server_env(settings) | (env or {}), log=log, workers=workers
    )
    try:
        wait_until_healthy(process, base_url, log, "uvicorn")
        yield process, base_url
    finally:
        if process.poll() is None:
            kill_group(process)


def stop_group(process: subprocess.Popen, *, timeout: float = 30) -> None:
    """SIGTERM the process's group and wait until every process of it is gone (SIGKILL after
    `timeout` seconds): a server or worker finishing its work would otherwise write into a
    folder being removed."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    try:
        process.wait(timeout=timeout)
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)  # raises once no process of the group is left
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait()


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the whole group: no cleanup, no acknowledgement, exactly like a crash."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def answers(url: str) -> bool:
    """Whether GET `url` answers 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def get_json(
    url: str, body: Any = None, *, token: str | None = None, headers: dict[str, str] | None = None
) -> Any:
    """GET `url` (POST `body` as JSON when given), with a bearer `token`: the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)
