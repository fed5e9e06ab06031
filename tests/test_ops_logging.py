"""Structured logs: JSON lines, request ids in and out, Celery task ids, and no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ops.logging import configure_logging, connect_celery_signals, redact
from tests.kit.config import configured, env_without_vidarena
from tests.kit.rating import link
from tests.kit.services import free_port
from tests.kit.studies import rating_study


@pytest.fixture
def captured(settings):  # type: ignore[no-untyped-def]
    """(app settings, a buffer every log record is written to as the app would write it)."""
    buffer = io.StringIO()

    def start(app_settings):  # type: ignore[no-untyped-def]
        app = create_app(app_settings)
        configure_logging(app_settings, stream=buffer)  # same formatter, into the buffer
        return app

    yield start, buffer
    configure_logging(settings)  # back to stderr


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_access_lines_carry_request_ids_and_route_templates_never_raw_urls(
    captured, session, settings
):
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    base = link(settings, study)
    start, buffer = captured
    with TestClient(start(settings)) as client:
        given = client.get(
            f"{base}?invite=SECRET-INVITE-42&PID=p123", headers={"X-Request-ID": "trace-42"}
        )
        made = client.get("/healthz", headers={"X-Request-ID": "no spaces allowed here"})
    assert given.headers["x-request-id"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    entries = lines(buffer)
    access = [e for e in entries if e["logger"] == "vidarena.access"]
    line = next(e for e in access if e.get("request_id") == "trace-42")
    assert line["route"] == "/r/{key}" and line["method"] == "GET"
    assert line["status"] == given.status_code
    assert line["duration_ms"] >= 0 and line["level"] == "INFO" and line["ts"].endswith("+00:00")
    # What the app wrote (the test client's own httpx logger prints the URLs it requested).
    text = "\n".join(json.dumps(e) for e in entries if not e["logger"].startswith("httpx"))
    assert "SECRET-INVITE-42" not in text and "p123" not in text
    assert base.split("/")[-1] not in text  # the study key itself stays out of the logs


def test_no_secrets_reach_the_logs(captured, settings):
    secrets_ = {
        "admin_password": "adm1n-Pa55word-xyz",
        "secret_key": "sk-" + "q" * 40,
        "metrics_token": "metrics-tok-123456",
    }
    app_settings = configured(settings, **secrets_)
    start, buffer = captured
    with TestClient(start(app_settings)) as client:
        # A wrong guess and the right password, through the login form.
        from tests.kit.admin import log_in

        log_in(client, password="guess-Pa55word-abc")
        assert log_in(client, password=secrets_["admin_password"]).status_code == 303
        client.get("/metrics", headers={"Authorization": f"Bearer {secrets_['metrics_token']}"})
    log = logging.getLogger("vidarena.test")
    log.warning("connecting to postgresql://vidarena:pg-Pa55-word@db:5432/x")
    log.warning("headers: Authorization: Bearer abc.def.ghi Cookie: vidarena_session=eyJhbGc")
    log.warning("config %s", {"password": "plain-pw-1", "token": "tok-2"})
    log.warning("with extra", extra={"api_key": "extra-key-3", "note": "fine"})
    try:
        raise RuntimeError(f"failed with key {secrets_['secret_key']}")
    except RuntimeError:
        log.exception("boom")
    text = "\n".join(json.dumps(e) for e in lines(buffer) if not e["logger"].startswith("httpx"))
    for leaked in [
        *secrets_.values(),
        "pg-Pa55-word",
        "abc.def.ghi",
        "eyJhbGc",
        "plain-pw-1",
        "tok-2",
        "extra-key-3",
        "guess-Pa55word-abc",
    ]:
        assert leaked not in text, leaked
    entries = lines(buffer)
    assert any("postgresql://vidarena:***@db:5432/x" in e["message"] for e in entries)
    assert any(e.get("note") == "fine" and e.get("api_key") == "***" for e in entries)
    assert any("exc" in e and "RuntimeError" in e["exc"] for e in entries)


def test_redaction_keeps_ordinary_text():
    assert (
        redact("GET /admin/studies/{slug} 200 in 4 ms") == "GET /admin/studies/{slug} 200 in 4 ms"
    )
    assert redact("redis://redis:6379/0") == "redis://redis:6379/0"


def test_celery_task_ids_are_stamped_on_worker_lines(settings):
    from celery.signals import task_postrun, task_prerun

    buffer = io.StringIO()
    configure_logging(settings, stream=buffer)
    try:
        connect_celery_signals()

        class Task:
            name = "vidarena.render_clip"

        log = logging.getLogger("workers.tasks")
        task_prerun.send(sender=Task, task_id="task-abc-123", task=Task, args=(), kwargs={})
        log.info("clip 7: done")
        task_postrun.send(sender=Task, task_id="task-abc-123", task=Task, args=(), kwargs={})
        log.info("idle")
    finally:
        configure_logging(settings)
    during, after = (e for e in lines(buffer) if e["logger"] == "workers.tasks")
    assert during["task_id"] == "task-abc-123" and during["task"] == "vidarena.render_clip"
    assert "task_id" not in after


def test_vidarena_serve_writes_json_and_no_raw_access_lines(tmp_path):
    """The real `vidarena serve` (uvicorn configures its loggers first, then our factory)."""
    port = free_port()
    env = env_without_vidarena() | {
        "VIDARENA_ENV": "test",
        "VIDARENA_VAR_DIR": str(tmp_path / "var"),
        "VIDARENA_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite'}",
        "VIDARENA_ADMIN_PASSWORD": "serve-admin-pw-1",
        "VIDARENA_SECRET_KEY": "serve-secret-" + "k" * 32,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-render-worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        response = httpx.get(
            f"http://127.0.0.1:{port}/admin/login?next=/admin/%3Ftoken%3DSECRETQ",
            headers={"X-Request-ID": "serve-req-1"},
        )
        assert response.headers["x-request-id"] == "serve-req-1"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    others = [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert others == [], others  # every line is JSON (uvicorn's included)
    access = [r for r in records if r.get("request_id") == "serve-req-1"]
    assert access and access[0]["route"] == "/admin/login"
    assert "SECRETQ" not in stderr and "serve-admin-pw-1" not in stderr
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert os.environ.get("VIDARENA_LOG_FORMAT", "json") == "json" or records
