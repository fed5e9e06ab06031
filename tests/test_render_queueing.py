"""Queueing renders: tasks reach the embedded broker in the order queued (first pairs first), and
the study moves from draft to rendering, never backwards, by every way of queueing (the service,
the admin render panel, the JSON route; `vidarena render` is in test_cli.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.config import Settings
from app.main import create_app
from app.studies import service as studies_service
from app.studies.models import Study, StudyStatus
from tests.kit.admin import admin_token, log_in
from tests.kit.studies import small_study


def delivery_order(queue: Path) -> list[int]:
    """Clip ids in the order kombu's filesystem transport hands the messages out (by name)."""
    order = []
    for path in sorted(queue.iterdir()):
        body = json.loads(base64.b64decode(json.loads(path.read_text())["body"]))
        order.append(body[0][0])
    return order


def test_the_embedded_broker_delivers_renders_in_the_order_they_were_queued(tmp_path):
    # Its messages are named by the millisecond they were sent plus a random uuid: several
    # sends in one millisecond used to come out shuffled, so a later prompt's clip could
    # render before the second clip of the first pair.
    settings = Settings(env="test", var_dir=tmp_path, broker_url=f"filesystem://{tmp_path}/b")
    ids = list(range(1, 61))
    send_renders(settings=settings, clips=[(i, True) for i in ids])
    assert delivery_order(tmp_path / "b" / "queue") == ids


def status(session, slug: str) -> StudyStatus:
    session.expire_all()
    return session.scalar(select(Study.status).where(Study.slug == slug))


@pytest.mark.parametrize("start", [StudyStatus.draft, StudyStatus.open, StudyStatus.closed])
def test_queueing_moves_a_draft_to_rendering_and_nothing_backwards(session, start):
    study = small_study(session)
    for step in {StudyStatus.draft: [], StudyStatus.open: [StudyStatus.open]}.get(
        start, [StudyStatus.open, StudyStatus.closed]
    ):
        studies_service.set_status(session=session, study=study, status=step)
    session.commit()
    ids = clips_service.queue_missing(session=session, study=study, tiny=True)
    session.commit()
    assert len(ids) == 4
    expected = StudyStatus.rendering if start == StudyStatus.draft else start
    assert status(session, "small") == expected


def test_nothing_to_queue_leaves_a_draft_alone(session):
    study = small_study(session)
    assert clips_service.retry_failed(session=session, study=study, tiny=True) == []
    session.commit()
    assert status(session, "small") == StudyStatus.draft


@pytest.fixture
def admin_client(settings, tmp_path):
    from fastapi.testclient import TestClient

    app = create_app(settings.model_copy(update={"broker_url": f"filesystem://{tmp_path}/b"}))
    with TestClient(app) as client:
        assert log_in(client).status_code == 303
        yield client


def test_the_render_panel_moves_a_draft_to_rendering(session, admin_client):
    small_study(session, slug="panel")
    response = admin_client.post(
        "/admin/studies/panel/render",
        data={"csrf_token": admin_token(admin_client), "action": "missing", "tiny": "true"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert status(session, "panel") == StudyStatus.rendering


def test_the_json_route_moves_a_draft_to_rendering_and_keeps_an_open_study_open(
    session, admin_client
):
    small_study(session, slug="draft")
    opened = small_study(session, slug="opened")
    studies_service.set_status(session=session, study=opened, status=StudyStatus.open)
    session.commit()
    headers = {"Accept": "application/json", "X-CSRF-Token": admin_token(admin_client)}
    for slug in ("draft", "opened"):
        response = admin_client.post(
            f"/admin/api/studies/{slug}/render", json={"tiny": True}, headers=headers
        )
        assert response.status_code == 202, response.text
        assert response.json()["queued"] == 4
    assert status(session, "draft") == StudyStatus.rendering
    assert status(session, "opened") == StudyStatus.open
