"""Prometheus metrics: latency by route template, votes/trials counted on commit, SQL gauges,
the bearer token, render counters served by a worker, and sums across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.clips import service as clips_service
from app.clips.models import Clip
from app.main import create_app
from app.ops import metrics
from tests.kit.config import configured
from tests.kit.rating import all_left, link
from tests.kit.services import free_port
from tests.kit.studies import rating_study, small_study


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_timed_by_route_template(client, session, settings):
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    key = link(settings, study).split("/")[-1]
    client.get(f"/r/{key}/api/study")
    client.get("/no/such/thing/123")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    count = found[
        (
            "vidarena_http_request_duration_seconds_count",
            (("method", "GET"), ("route", "/r/{key}/api/study")),
        )
    ]
    assert count >= 1
    assert any(
        labels == (("method", "GET"), ("route", "<unmatched>"), ("status", "404"))
        for (name, labels) in found
        if name == "vidarena_http_requests_total"
    )
    assert key not in response.text and "/no/such/thing" not in response.text


def test_votes_trials_and_evaluators_are_counted_when_committed(client, session, settings):
    study = rating_study(session, settings, prompts=3, open_enrollment=True)
    base = link(settings, study)
    before = {
        "votes": value("vidarena_votes_total"),
        "assigned": value("vidarena_trials_total", event="assigned"),
        "answered": value("vidarena_trials_total", event="answered"),
        "evaluators": value("vidarena_evaluators_joined_total"),
    }
    token = client.post(f"{base}/api/join", json={}).json()["evaluator_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    trial = client.get(f"{base}/api/next", headers=bearer).json()["trial"]
    url = f"{base}/api/trials/{trial['id']}/votes"
    bad = {**all_left(study), study.criterion_keys[0]: "sideways"}
    assert client.post(url, json={"votes": bad}, headers=bearer).status_code == 422
    assert value("vidarena_votes_total") == before["votes"]  # refused: nothing counted
    assert client.post(url, json={"votes": all_left(study)}, headers=bearer).status_code == 200
    assert client.post(url, json={"votes": all_left(study)}, headers=bearer).status_code == 200
    criteria = len(study.criterion_keys)
    assert value("vidarena_votes_total") - before["votes"] == criteria  # the repeat adds none
    assert value("vidarena_trials_total", event="answered") - before["answered"] == 1
    assert value("vidarena_trials_total", event="assigned") - before["assigned"] >= 1
    assert value("vidarena_evaluators_joined_total") - before["evaluators"] == 1
    # The SQL gauges agree with what is stored.
    found = samples(client.get("/metrics").text)
    assert found[("vidarena_votes_stored", ())] == criteria
    assert found[("vidarena_trials_answered", ())] == 1
    assert found[("vidarena_evaluators", ())] == 1
    assert found[("vidarena_clips", (("status", "done"),))] == 3 * 2
    assert found[("vidarena_sql_metrics_up", ())] == 1


def test_metrics_token(settings):
    guarded = configured(settings, metrics_token="scrape-token-123")
    with TestClient(create_app(guarded)) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Bearer" in wrong.headers["www-authenticate"]
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"})
        assert ok.status_code == 200 and "vidarena_http_requests_total" in ok.text
    for token in (None, ""):  # production without a token: refused, an empty one included
        production = configured(settings, env="production", metrics_token=token)
        with TestClient(create_app(production)) as client:
            refused = client.get("/metrics", headers={"Authorization": "Bearer "})
            assert refused.status_code == 403 and "VIDARENA_METRICS_TOKEN" in refused.text


def test_render_outcomes_are_served_by_the_worker_metrics_port(session, engine):
    study = small_study(session, slug="metrics")
    clip_ids = list(session.scalars(select(Clip.id).order_by(Clip.id)))
    kinds = {clips_service.arm_kind_of(engine, clip_id) for clip_id in clip_ids}
    assert kinds == {arm.kind for arm in study.arms}
    assert clips_service.arm_kind_of(engine, 10**9) == "unknown"
    metrics.record_render("done", "animatediff-lightning", 1.7)
    metrics.record_render("failed", "animatediff", None)
    port = free_port()
    assert metrics.start_worker_server(port) is True
    assert metrics.start_worker_server(0) is False  # off by default
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found = samples(text)
    done = (("arm_kind", "animatediff-lightning"), ("status", "done"))
    assert found[("vidarena_renders_total", done)] >= 1
    assert found[("vidarena_render_seconds_count", done)] >= 1
    assert found[("vidarena_renders_total", (("arm_kind", "animatediff"), ("status", "failed")))]


def test_several_processes_sum_up_in_multiprocess_mode(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    record = "from app.ops import metrics; metrics.record_vote(3); metrics.record_trial('answered')"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", record], env=env, check=True, timeout=60)
    scrape = (
        "import sys; from app.ops.metrics import exposition; "
        "sys.stdout.write(exposition(None).decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", scrape],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    found = samples(out)
    assert found[("vidarena_votes_total", ())] == 6
    assert found[("vidarena_trials_total", (("event", "answered"),))] == 2


def test_sqlite_write_lock_time_is_counted(engine, session):
    """The database-wide write lock's hold time (the ceiling for SQLite's trials/s) is counted
    for every write transaction on SQLite, and never on PostgreSQL, which has no such lock."""
    from app.db import WRITE_LOCK_HOLDS, WRITE_LOCK_SECONDS

    holds, seconds = WRITE_LOCK_HOLDS._value.get(), WRITE_LOCK_SECONDS._value.get()
    with Session(engine) as write, write.begin():
        write.execute(text("SELECT 1"))
        time.sleep(0.05)
    sqlite = engine.dialect.name == "sqlite"
    assert WRITE_LOCK_HOLDS._value.get() - holds == (1 if sqlite else 0)
    held = WRITE_LOCK_SECONDS._value.get() - seconds
    assert (held >= 0.05) if sqlite else held == 0
    exposed = metrics.exposition(None).decode()
    assert "vidarena_sqlite_write_lock_seconds_total" in exposed
