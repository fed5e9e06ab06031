"""Join and submit rate limits where they are kept (VIDARENA_RATE_LIMIT_STORAGE): one budget in
Redis shared by separate web processes, one per process in memory, and Redis failing open (the
request passes, a counter and a warning say so, no request waits more than one short timeout).

Redis is a private redis-server per test (tests/kit/services.py): the budgets are keyed by client
address, which every test here shares, and one test stops and restarts it. Without redis-server
these tests skip locally and fail under CI=true. (The 429 itself, per-address and per-evaluator
keys and the bucket's arithmetic: tests/test_ops_security.py.)"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db import upgrade_schema
from app.main import create_app
from app.ops import metrics
from tests.kit.admin import ADMIN_PASSWORD
from tests.kit.config import configured
from tests.kit.servers import kill_group, server_env, spawn_uvicorn, wait_until_healthy
from tests.kit.services import PrivateRedis, free_port, private_redis

UNKNOWN_JOIN = "/r/no-such-link/api/join"  # answered 404 by the app, counted by the limiter


def failed_open(rule: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "vidarena_rate_limit_failed_open_total", {"rule": rule}
    )
    return value or 0.0


def scraped_failed_open(base_url: str, rule: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    found = re.search(rf'vidarena_rate_limit_failed_open_total\{{rule="{rule}"\}} (\S+)', text)
    return float(found[1]) if found else 0.0


@pytest.fixture(scope="module")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A migrated SQLite database (the limits need no study: unknown links are counted too)."""
    root = tmp_path_factory.mktemp("rate-limits")
    url = f"sqlite:///{root / 'test.sqlite'}"
    upgrade_schema(url)
    return Settings(
        env="test",
        var_dir=root / "var",
        database_url=url,
        storage_url=str(root / "media"),
        admin_password=ADMIN_PASSWORD,
        secret_key="test-secret-key-" + "x" * 32,
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(str(tmp_path)) as server:
        yield server


@contextmanager
def web_processes(
    settings: Settings, log_dir: Path, count: int, **env: str
) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """`count` separate uvicorn processes (one worker each, a port each) of the app on `settings`
    plus `env`; yields [(process, base URL)], SIGKILLs them on exit."""
    environment = server_env(settings) | env
    with ExitStack() as stack:
        servers = []
        for number in range(count):
            log = log_dir / f"web{number}.log"
            process, base_url = spawn_uvicorn("app.main:create_app", env=environment, log=log)
            stack.callback(lambda p=process: kill_group(p) if p.poll() is None else None)
            servers.append((process, base_url, log))
        for process, base_url, log in servers:
            wait_until_healthy(process, base_url, log, "uvicorn")
        yield [(process, base_url) for process, base_url, _ in servers]


def join(base_url: str) -> int:
    return httpx.post(f"{base_url}{UNKNOWN_JOIN}", json={}, timeout=10).status_code


def submit(base_url: str, token: str) -> int:
    url = f"{base_url}/r/no-such-link/api/trials/1/votes"
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(url, json={"votes": []}, headers=headers, timeout=10).status_code


# --- where the budgets live -----------------------------------------------------------------


def test_the_storage_follows_a_redis_broker_unless_named():
    embedded = Settings(env="test")
    assert embedded.broker_url.startswith("filesystem://")
    assert embedded.rate_limit_storage_url == "memory://"
    scaled = Settings(env="test", broker_url="redis://redis:6379/0")
    assert scaled.rate_limit_storage_url == "redis://redis:6379/0"
    named = Settings(env="test", broker_url="redis://redis:6379/0", rate_limit_storage="memory://")
    assert named.rate_limit_storage_url == "memory://"
    tls = Settings(env="test", rate_limit_storage=" rediss://:pw@cache:6380/1 ")
    assert tls.rate_limit_storage_url == "rediss://:pw@cache:6380/1"
    with pytest.raises(ValueError, match="memory:// or a redis://"):
        Settings(env="test", rate_limit_storage="memcached://cache:11211")


def test_limits_off_ask_no_storage(base_settings):
    """0 (the load benchmark's setting) is no rule: nothing counted, Redis never asked."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    off = configured(
        base_settings,
        rate_limit_storage=dead,
        rate_limit_join_per_minute=0,
        rate_limit_submit_per_minute=0,
    )
    before = failed_open("join") + failed_open("submit")
    with TestClient(create_app(off)) as client:
        assert [client.post(UNKNOWN_JOIN, json={}).status_code for _ in range(5)] == [404] * 5
    assert failed_open("join") + failed_open("submit") == before


# --- Redis: one budget for every process ----------------------------------------------------


@pytest.mark.redis
def test_redis_limits_answer_the_same_429_with_retry_after(base_settings, redis_server):
    limited = configured(
        base_settings,
        rate_limit_storage=redis_server.url,
        rate_limit_join_per_minute=2,
        rate_limit_submit_per_minute=2,
    )
    with TestClient(create_app(limited)) as client:
        assert [client.post(UNKNOWN_JOIN, json={}).status_code for _ in range(2)] == [404, 404]
        refused = client.post(UNKNOWN_JOIN, json={})
        assert refused.status_code == 429
        assert refused.json()["detail"]["code"] == "rate_limited"
        assert 55 <= int(refused.headers["retry-after"]) <= 60  # when the first leaves the window
        assert refused.headers["cache-control"] == "no-store"
        assert refused.headers["x-frame-options"] == "DENY"
        form = client.post("/r/no-such-link/join", data={}, follow_redirects=False)
        assert form.status_code == 429 and "Please wait" in form.text
        # Submits: per evaluator token, each with a budget of its own.
        url = "/r/no-such-link/api/trials/1/votes"
        first = {"Authorization": "Bearer evaluator-one"}
        codes = [client.post(url, json={}, headers=first).status_code for _ in range(3)]
        assert 429 not in codes[:2] and codes[2] == 429
        second = {"Authorization": "Bearer evaluator-two"}
        assert client.post(url, json={}, headers=second).status_code != 429
    keys = {key.decode() for key in redis_server.client().keys("*")}
    assert keys and all(key.startswith("vidarena:rate-limit:") for key in keys), keys
    assert not any("evaluator-one" in key for key in keys)  # tokens are hashed into keys


@pytest.mark.redis
def test_two_web_processes_share_one_budget_in_redis_but_not_in_memory(
    base_settings, redis_server, tmp_path
):
    """Limit 5 a minute: 3 joins to process A and 3 to process B. With Redis the sixth is
    refused, wherever it lands; in memory each process has 5 of its own and all 6 pass."""
    limits = {
        "VIDARENA_RATE_LIMIT_JOIN_PER_MINUTE": "5",
        "VIDARENA_RATE_LIMIT_SUBMIT_PER_MINUTE": "2",
    }
    with web_processes(
        base_settings, tmp_path, 2, VIDARENA_RATE_LIMIT_STORAGE=redis_server.url, **limits
    ) as [(_, a), (_, b)]:
        assert [join(a) for _ in range(3)] + [join(b) for _ in range(3)] == [404] * 5 + [429]
        assert join(a) == 429  # the budget is spent for both
        # An evaluator's answers, too: two to A, the third to B is refused.
        assert [submit(a, "tok-1"), submit(a, "tok-1"), submit(b, "tok-1")][2] == 429
        assert submit(b, "tok-2") != 429  # someone else's budget
    with web_processes(
        base_settings, tmp_path, 2, VIDARENA_RATE_LIMIT_STORAGE="memory://", **limits
    ) as [(_, a), (_, b)]:
        assert [join(a) for _ in range(3)] + [join(b) for _ in range(3)] == [404] * 6
        assert [submit(a, "tok-1"), submit(a, "tok-1"), submit(b, "tok-1")][2] != 429


# --- Redis down: fail open ------------------------------------------------------------------


@pytest.mark.redis
def test_redis_down_lets_requests_through_counts_them_and_limits_resume(
    base_settings, redis_server, tmp_path
):
    env = {
        "VIDARENA_RATE_LIMIT_STORAGE": redis_server.url,
        "VIDARENA_RATE_LIMIT_JOIN_PER_MINUTE": "2",
    }
    with web_processes(base_settings, tmp_path, 1, **env) as [(_, web)]:
        assert [join(web) for _ in range(3)] == [404, 404, 429]  # Redis keeps the budget
        redis_server.stop()
        started = time.monotonic()
        answers = [join(web) for _ in range(6)]
        assert answers == [404] * 6  # served, not refused, not an error
        assert time.monotonic() - started < 3  # no request waits long for a Redis that is gone
        assert scraped_failed_open(web, "join") == 6
        # Back: a fresh Redis (its data gone) and, after the pause, the limits apply again.
        redis_server.start()
        time.sleep(1.2)
        assert [join(web) for _ in range(3)] == [404, 404, 429]
        assert scraped_failed_open(web, "join") == 6
    log = (tmp_path / "web0.log").read_text()
    assert log.count("unavailable") == 1, log  # one warning per interval, not one per request
    assert "answers again" in log and "(6 requests were let through" in log, log


def test_a_redis_that_never_answers_costs_one_short_timeout(base_settings):
    """A peer that accepts connections and never replies (a hung Redis, a black-holed route):
    the first request waits one socket timeout, the following pass at once while the limiter
    pauses; every one of them is counted."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        hung = configured(
            base_settings,
            rate_limit_storage=f"redis://127.0.0.1:{port}/0",
            rate_limit_join_per_minute=1,
        )
        before = failed_open("join")
        with TestClient(create_app(hung)) as client:
            started = time.monotonic()
            codes = [client.post(UNKNOWN_JOIN, json={}).status_code for _ in range(20)]
            elapsed = time.monotonic() - started
        assert codes == [404] * 20  # a limit of 1 would have refused 19
        assert elapsed < 1.5, elapsed
        assert failed_open("join") - before == 20
