"""The admin render panel: queue, retry failed, cancel, and the live progress JSON."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select, update

from app.clips import service as clips_service
from app.clips.models import Clip, ClipStatus
from app.main import create_app
from tests.kit.admin import admin_token, log_in
from tests.kit.studies import small_study


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
    assert "4 clips queued with tiny models." in client.get("/admin/studies/panel").text


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


TINY_BOX = re.compile(r'<input type="checkbox" name="tiny" value="true"( checked)?>')
ALL_FAILED = re.compile(r'<div class="[^"]*render-failed[^"]*" role="alert">(.*?)</div>', re.S)


def tiny_ticked(client, slug: str) -> bool:  # type: ignore[no-untyped-def]
    match = TINY_BOX.search(client.get(f"/admin/studies/{slug}").text)
    assert match, "the render panel has no tiny-models box"
    return bool(match[1])


def fail_clips(session, ids: list[int], error: str) -> None:  # type: ignore[no-untyped-def]
    session.execute(
        update(Clip).where(Clip.id.in_(ids)).values(status=ClipStatus.failed, error=error)
    )
    session.commit()


def test_tiny_box_follows_the_studys_last_render_batch(session, panel_client):
    client, _ = panel_client
    study = small_study(session, slug="panel")
    assert not tiny_ticked(client, "panel")  # never rendered: real models
    # The demo queues its clips with tiny models outside the panel (`vidarena demo`).
    clips_service.queue_missing(session=session, study=study, tiny=True)
    session.commit()
    assert tiny_ticked(client, "panel")

    token = admin_token(client)
    ids = [c.id for c in session.scalars(select(Clip).order_by(Clip.id))]
    fail_clips(session, ids[:1], "boom")
    client.post(
        "/admin/studies/panel/render",
        data={"csrf_token": token, "action": "retry_failed", "tiny": "true"},
    )
    assert tiny_ticked(client, "panel")  # retried with tiny models: still ticked
    fail_clips(session, ids[:2], "boom")
    client.post("/admin/studies/panel/render", data={"csrf_token": token, "action": "missing"})
    assert not tiny_ticked(client, "panel")  # the admin's last choice was real models
    session.expire_all()
    assert [c.tiny for c in session.scalars(select(Clip))] == [False] * 4  # queued ones too


def test_every_clip_failed_shows_the_errors_unfolded(session, panel_client):
    client, _ = panel_client
    study = small_study(session, slug="panel")
    clips_service.queue_missing(session=session, study=study, tiny=False)
    session.commit()
    ids = [c.id for c in session.scalars(select(Clip).order_by(Clip.id))]
    fail_clips(session, ids[:3], "OSError: cannot reach the model hub after 5 retries")
    assert ALL_FAILED.search(client.get("/admin/studies/panel").text) is None  # one is queued

    fail_clips(session, ids[3:], "RuntimeError: out of memory")
    page = client.get("/admin/studies/panel").text
    alert = ALL_FAILED.search(page)
    assert alert, "every clip failed, yet the errors stay folded away"
    assert "cannot reach the model hub" in alert[1] and "out of memory" in alert[1]
    assert alert[1].count("cannot reach the model hub") == 1  # the same error once
    assert "tick “tiny models”" in alert[1]

    # One clip done: rendering works, the errors go back into the folded list.
    session.execute(
        update(Clip)
        .where(Clip.id == ids[0])
        .values(status=ClipStatus.done, storage_key="k" * 64, sha256="0" * 64, error=None)
    )
    session.commit()
    page = client.get("/admin/studies/panel").text
    assert ALL_FAILED.search(page) is None
    assert re.search(r"<summary>Latest errors \(3\)</summary>", page)
