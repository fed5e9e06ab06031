"""Faults on real services: the broker (a private redis-server) killed and restarted, database
connections killed (PostgreSQL) or the database locked (SQLite). The server is never restarted:
it must answer clearly while a component is down and recover by itself when it returns."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.clips.models import Clip, ClipStatus
from app.main import create_app
from app.studies.models import Prompt, Study
from tests.kit.admin import admin_token, log_in
from tests.kit.config import configured
from tests.kit.rating import all_left, link
from tests.kit.services import private_redis
from tests.kit.studies import rating_study, small_study

JSON = {"Accept": "application/json"}


def queue_json(client, slug: str, **body):  # type: ignore[no-untyped-def]
    headers = {**JSON, "X-CSRF-Token": admin_token(client)}
    return client.post(f"/admin/api/studies/{slug}/render", json=body, headers=headers)


def statuses(engine, slug: str) -> list[ClipStatus]:  # type: ignore[no-untyped-def]
    query = (
        select(Clip.status)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .join(Study, Study.id == Prompt.study_id)
        .where(Study.slug == slug)
        .order_by(Clip.id)
    )
    with engine.connect() as conn:
        return list(conn.scalars(query))


@pytest.mark.redis
def test_redis_down_queueing_is_a_clear_503_the_rest_works_and_it_recovers(
    session, settings, engine, tmp_path
):
    study = small_study(session, slug="faults")
    rated = rating_study(session, settings, slug="rated", prompts=2, open_enrollment=True)
    with private_redis(str(tmp_path)) as redis_server:
        app = create_app(configured(settings, broker_url=redis_server.url))
        with TestClient(app) as client:
            assert log_in(client).status_code == 303
            first = queue_json(client, study.slug, tiny=True)
            assert first.status_code == 202, first.text
            assert first.json() == {"queued": 4, "sent": 4}
            assert redis_server.client().llen("render") == 4

            # Redis goes away. The clips are cancelled so there is something to queue again.
            redis_server.stop()
            token = admin_token(client)
            client.post(f"/admin/studies/{study.slug}/render/cancel", data={"csrf_token": token})
            started = time.monotonic()
            down = queue_json(client, study.slug, tiny=True)
            assert time.monotonic() - started < 10
            assert down.status_code == 503
            assert down.headers["retry-after"].isdigit()
            detail = down.json()["detail"]
            assert detail["code"] == "queue_unavailable"
            assert (
                "unavailable" in detail["message"] and str(redis_server.port) in detail["message"]
            )
            assert statuses(engine, study.slug) == [ClipStatus.queued] * 4  # kept in SQL

            # The admin form says the same thing on the study page.
            client.post(f"/admin/studies/{study.slug}/render/cancel", data={"csrf_token": token})
            form = client.post(
                f"/admin/studies/{study.slug}/render",
                data={"csrf_token": token, "action": "missing"},
                follow_redirects=False,
            )
            assert form.status_code == 303
            page = client.get(f"/admin/studies/{study.slug}")
            assert page.status_code == 200 and "is unavailable" in page.text

            # Everything that does not queue renders keeps working.
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["components"]["broker"]["status"] == "down"
            assert client.get("/readyz?require=database,storage").status_code == 200
            assert client.get("/healthz").status_code == 200
            assert client.get("/admin/").status_code == 200
            base = link(settings, rated)
            joined = client.post(f"{base}/api/join", json={})
            assert joined.status_code == 200, joined.text
            bearer = {"Authorization": f"Bearer {joined.json()['evaluator_token']}"}
            trial = client.get(f"{base}/api/next", headers=bearer).json()["trial"]
            voted = client.post(
                f"{base}/api/trials/{trial['id']}/votes",
                json={"votes": all_left(rated)},
                headers=bearer,
            )
            assert voted.status_code == 200, voted.text
            dashboard = client.get(f"/admin/studies/{rated.slug}/dashboard")
            assert dashboard.status_code == 200
            export = client.get(f"/admin/studies/{rated.slug}/export/votes.csv")
            assert export.status_code == 200
            assert len(export.text.strip().splitlines()) == 1 + len(rated.criterion_keys)

            # Redis is back on the same address: the same app queues again, and the clips whose
            # tasks never reached the broker are sent with it.
            redis_server.start()
            back = queue_json(client, study.slug, tiny=True)
            assert back.status_code == 202, back.text
            assert back.json() == {"queued": 4, "sent": 4}  # the stuck ones, sent again
            assert redis_server.client().llen("render") == 4
            assert client.get("/readyz").status_code == 200


def _kill_other_connections(database_url: str) -> int:
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    admin.dispose()
    return int(killed)


def test_database_connections_killed_the_next_requests_succeed(session, settings, engine):
    if settings.is_sqlite:
        pytest.skip("PostgreSQL: SQLite has no server connections (see the lock test)")
    small_study(session, slug="dbfault")
    session.close()
    app = create_app(settings)
    with TestClient(app) as client:
        assert log_in(client).status_code == 303
        for _ in range(3):  # fill the pool with live connections
            assert client.get("/admin/studies/dbfault").status_code == 200
        assert app.state.engine.pool.checkedin() >= 1
        assert _kill_other_connections(settings.database_url) >= 1
        # No restart: pool_pre_ping replaces each dead connection on checkout.
        for _ in range(5):
            assert client.get("/admin/studies/dbfault").status_code == 200
            assert client.get("/readyz").status_code == 200
        assert queue_json(client, "dbfault").status_code == 202  # writes too
        assert statuses(engine, "dbfault") == [ClipStatus.queued] * 4


def test_sqlite_locked_by_another_process_writers_wait_then_succeed(session, settings, engine):
    if not settings.is_sqlite:
        pytest.skip("SQLite: a lock held by another writer (a backup, a migration)")
    small_study(session, slug="locked")
    session.close()
    with TestClient(create_app(settings)) as client:
        assert log_in(client).status_code == 303
        token = admin_token(client)
        path = settings.database_url.removeprefix("sqlite:///")
        import sqlite3

        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
        release.start()
        try:
            started = time.monotonic()
            response = client.post(
                "/admin/api/studies/locked/render",
                json={},
                headers={**JSON, "X-CSRF-Token": token},
            )
            waited = time.monotonic() - started
        finally:
            release.join()
            holder.close()
        assert response.status_code == 202, response.text
        assert waited >= 1.0  # it waited for the lock instead of failing
        assert statuses(engine, "locked") == [ClipStatus.queued] * 4
        assert client.get("/readyz").status_code == 200
