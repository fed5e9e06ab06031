"""The admin render panel: queue, retry failed, cancel, and the live progress JSON."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from app.clips.models import Clip, ClipStatus
from app.main import create_app
from tests.factories import small_study
from tests.test_admin_web import admin_token, log_in


@pytest.fixture
def panel_client(settings, tmp_path):
    from fastapi.testclient import TestClient

    broker = tmp_path / "broker"
    app = create_app(settings.model_copy(update={"broker_url": f"filesystem://{broker}"}))
    with TestClient(app) as client:
        assert log_in(client).status_code == 303
        yield client, broker / "queue"


def statuses(session) -> list[ClipStatus]:
    session.expire_all()
    return [c.status for c in session.scalars(select(Clip).order_by(Clip.id))]


def test_render_missing_queues_every_clip_and_sends_one_task_each(session, panel_client):
    client, queue = panel_client
    small_study(session, slug="panel")
    page = client.get("/admin/studies/panel")
    assert 'id="render"' in page.text and "Render missing clips" in page.text
    response = client.post(
        "/admin/studies/panel/render",
        data={"csrf_token": admin_token(client), "action": "missing", "tiny": "true"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert statuses(session) == [ClipStatus.queued] * 4
    assert len(list(queue.iterdir())) == 4  # one message per clip on the embedded broker
    progress = client.get("/admin/studies/panel/render").json()
    assert progress["active"] is True
    assert {a["arm"]: a["counts"]["queued"] for a in progress["arms"]} == {"slow": 2, "fast": 2}
    assert "4 clip(s) queued with tiny models" in client.get("/admin/studies/panel").text


def test_cancel_then_retry_failed(session, panel_client):
    client, _ = panel_client
    small_study(session, slug="panel")
    token = admin_token(client)
    client.post("/admin/studies/panel/render", data={"csrf_token": token, "action": "missing"})
    client.post("/admin/studies/panel/render/cancel", data={"csrf_token": token})
    assert statuses(session) == [ClipStatus.cancelled] * 4
    assert client.get("/admin/studies/panel/render").json()["active"] is False

    first = session.scalars(select(Clip).order_by(Clip.id)).first()
    session.execute(
        update(Clip).where(Clip.id == first.id).values(status=ClipStatus.failed, error="boom")
    )
    session.commit()
    assert "boom" in client.get("/admin/studies/panel").text  # latest errors are listed
    client.post("/admin/studies/panel/render", data={"csrf_token": token, "action": "retry_failed"})
    assert statuses(session) == [ClipStatus.queued] + [ClipStatus.cancelled] * 3


def test_unknown_action_and_missing_csrf_are_refused(session, panel_client):
    client, _ = panel_client
    small_study(session, slug="panel")
    bad = client.post(
        "/admin/studies/panel/render", data={"csrf_token": admin_token(client), "action": "nuke"}
    )
    assert bad.status_code == 422
    forged = client.post("/admin/studies/panel/render", data={"action": "missing"})
    assert forged.status_code == 403
    assert statuses(session) == [ClipStatus.pending] * 4
