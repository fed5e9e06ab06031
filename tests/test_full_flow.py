"""The whole flow on real services, twice:

- scale-out: PostgreSQL, a `vidarena worker` on Redis, media in S3 (a real S3 HTTP server, moto);
- embedded default: SQLite, a `vidarena worker` on the filesystem broker, a local media folder.

An admin uploads a small study (two arms like the example study's, three prompts, the six
default criteria) through the web form, queues its renders through the JSON route, a real
worker process renders every clip with tiny models into storage, the admin opens the study,
`vidarena invite` prints three invite links, three evaluators rate every pair through the JSON
API (both clips fetched from storage through the media route), and then the dashboard, the
HTTP export and `vidarena export votes` all show exactly the votes that were sent and stored.

Everything runs over real HTTP against uvicorn. Missing Redis or PostgreSQL skips the scale-out
run locally and fails it under CI=true (require_service).
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from app.clips.models import Clip, ClipStatus
from app.rating.models import Vote
from app.rating.padding import unpad_gif
from app.storage import get_storage
from tests.kit.admin import admin_token, log_in, upload
from tests.kit.config import configured
from tests.kit.db import db
from tests.kit.paths import ROOT
from tests.kit.s3 import running_s3_server, s3_client, s3_settings
from tests.kit.services import redis_broker_url
from tests.kit.workers import running_worker, wait_until, worker_env

pytestmark = pytest.mark.slow

BUCKET = "vidarena-flow"
SLUG = "flow"
STUDY_TOML = f"""
name = "Full flow: Lightning vs AnimateDiff"
slug = "{SLUG}"
prompts = "prompts.csv"

[render]
num_frames = 4
width = 64
height = 64
fps = 8

[rating]
open_enrollment = false

[[arms]]
name = "animatediff"
kind = "animatediff"
base_model = "emilianJR/epiCRealism"
motion_adapter = "guoyww/animatediff-motion-adapter-v1-5-2"
steps = 2
guidance_scale = 7.5
scheduler = {{ name = "ddim", beta_schedule = "linear", timestep_spacing = "linspace", clip_sample = false, steps_offset = 1 }}

[[arms]]
name = "lightning-1step"
kind = "animatediff-lightning"
base_model = "emilianJR/epiCRealism"
motion_adapter = "ByteDance/AnimateDiff-Lightning"
steps = 1
guidance_scale = 1.0
scheduler = {{ name = "euler", timestep_spacing = "trailing", beta_schedule = "linear" }}
"""  # noqa: E501
PROMPTS_CSV = """prompt,theme,seed
a red fox trotting through fresh snow,wildlife,11
waves rolling onto a pebble beach at dawn,nature,12
a skateboarder gliding down an empty road,sports,13
"""
PROMPTS, ARMS, EVALUATORS = 3, 2, 3
CHOICES = ("left", "right", "tie")


@pytest.fixture(scope="module")
def s3_endpoint():  # type: ignore[no-untyped-def]
    with running_s3_server(BUCKET) as endpoint_url:
        yield endpoint_url


@pytest.fixture(scope="module")
def tiny_var(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Tiny models are built once and shared by both runs' workers."""
    return tmp_path_factory.mktemp("tiny-var")


@pytest.fixture
def settings(settings, request, tmp_path, tiny_var):  # type: ignore[no-untyped-def]
    """SQLite: the embedded default. PostgreSQL: Redis and S3 as well."""
    common = {"var_dir": tiny_var, "render_lease_seconds": 30, "rate_limit_join_per_minute": 0}
    if settings.is_sqlite:
        return configured(
            settings,
            broker_url=f"filesystem://{tmp_path / 'broker'}",
            storage_url=str(tmp_path / "media"),
            **common,
        )
    endpoint = request.getfixturevalue("s3_endpoint")
    s3 = s3_settings(endpoint, BUCKET, prefix=f"flow-{uuid.uuid4().hex[:8]}")
    return configured(settings, broker_url=redis_broker_url(), **s3, **common)


def service_env(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """What a worker or a CLI run on another machine would be given: the same services."""
    extra = {"VIDARENA_SECRET_KEY": settings.resolved_secret_key()}
    if settings.storage_url.startswith("s3://"):
        extra |= {
            "VIDARENA_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "VIDARENA_S3_REGION": settings.s3_region,
            "VIDARENA_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
            "VIDARENA_S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        }
    return extra


def vidarena(settings, *args: str) -> str:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=worker_env(settings, **service_env(settings)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def test_create_render_rate_dashboard_export(live_server, settings, engine, tmp_path):
    json_api = {"Accept": "application/json"}
    log = tmp_path / "worker.log"
    with httpx.Client(base_url=live_server, timeout=30) as admin:
        # 1. An admin creates the study from its two files.
        assert log_in(admin).status_code == 303
        token = admin_token(admin)
        created = upload(admin, STUDY_TOML.encode(), PROMPTS_CSV.encode(), token=token)
        assert created.status_code == 303, created.text[-3000:]
        assert created.headers["location"] == f"/admin/studies/{SLUG}"

        # 2. ... queues its renders; a real worker process renders every clip into storage.
        queued = admin.post(
            f"/admin/api/studies/{SLUG}/render",
            json={"tiny": True},
            headers={**json_api, "X-CSRF-Token": token},
        )
        assert queued.status_code == 202, queued.text
        assert queued.json() == {"queued": PROMPTS * ARMS, "sent": PROMPTS * ARMS}

        def rendered() -> bool:
            progress = admin.get(f"/admin/studies/{SLUG}/render").json()
            counts = [arm["counts"] for arm in progress["arms"]]
            assert not any(c.get("failed") for c in counts), progress
            return all(c.get("done") == PROMPTS for c in counts)

        with running_worker(settings, log, **service_env(settings)):
            wait_until(rendered, timeout=300, what="every clip rendered", log=log)
        with db(engine) as session:
            clips = session.scalars(select(Clip)).all()
            assert [c.status for c in clips] == [ClipStatus.done] * PROMPTS * ARMS
            assert all(c.attempts == 1 and c.tiny for c in clips)
            keys = {c.storage_key for c in clips}
        storage = get_storage(settings)
        stored_media = {storage.read(key) for key in keys}
        assert all(data[:6] == b"GIF89a" for data in stored_media)
        if settings.storage_url.startswith("s3://"):  # really in the bucket, under the prefix
            prefix = settings.storage_url.removeprefix(f"s3://{BUCKET}/")
            listing = s3_client(settings.s3_endpoint_url).list_objects_v2(
                Bucket=BUCKET, Prefix=prefix
            )
            assert {o["Key"].removeprefix(f"{prefix}/") for o in listing["Contents"]} >= keys
        else:
            assert all((tmp_path / "media" / key).is_file() for key in keys)

        # 3. ... opens it and makes invite links with the command line.
        opened = admin.post(
            f"/admin/studies/{SLUG}/status", data={"status": "open", "csrf_token": token}
        )
        assert opened.status_code == 303, opened.text[-2000:]
        links = vidarena(
            settings, "invite", SLUG, "--count", str(EVALUATORS), "--base-url", live_server
        ).split()
        assert len(links) == EVALUATORS

        # 4. Evaluators rate every pair through the JSON API, clips fetched from storage.
        sent = 0
        criteria: list[str] = []
        for n, url in enumerate(links):
            parts = urlsplit(url)
            with httpx.Client(base_url=live_server, timeout=30) as browser:
                assert browser.get(f"{parts.path}?{parts.query}").status_code == 200  # welcome
                joined = browser.post(
                    f"{parts.path}/api/join", json={"invite": parse_qs(parts.query)["invite"][0]}
                )
                assert joined.status_code == 200, joined.text
                criteria = [c["key"] for c in joined.json()["study"]["criteria"]]
                bearer = {"Authorization": f"Bearer {joined.json()['evaluator_token']}"}
                result = browser.get(f"{parts.path}/api/next", headers=bearer).json()
                step = 0
                while result["status"] == "trial":
                    trial = result["trial"]
                    shown = [browser.get(trial[side]["url"]) for side in ("left", "right")]
                    assert [r.status_code for r in shown] == [200, 200]
                    # Served padded to one size (app/rating/padding.py): the stored bytes inside.
                    assert {unpad_gif(r.content) for r in shown} <= stored_media
                    assert len(shown[0].content) == len(shown[1].content)
                    votes = {k: CHOICES[(n + step + i) % 3] for i, k in enumerate(criteria)}
                    answer = browser.post(
                        f"{parts.path}/api/trials/{trial['id']}/votes",
                        json={"votes": votes},
                        headers=bearer,
                    )
                    assert answer.status_code == 200, answer.text
                    sent += len(votes)
                    step += 1
                    result = answer.json()["next"]
                assert result["status"] == "done" and result["completion_code"], result
                assert step == PROMPTS  # every pair of a two-arm study: one per prompt
        assert len(criteria) == 6  # the default criteria
        assert sent == EVALUATORS * PROMPTS * len(criteria)

        # 5. The dashboard shows those votes.
        page = admin.get(f"/admin/studies/{SLUG}/dashboard")
        assert page.status_code == 200
        shown_votes = re.search(r'data-stat="votes">([\d,]+)<', page.text)
        assert shown_votes and int(shown_votes[1].replace(",", "")) == sent
        summary = admin.get(f"/admin/studies/{SLUG}/export/summary.json")
        assert summary.status_code == 200 and summary.json()["n_votes"] == sent

        # 6. Exported rows = votes stored = votes sent, over HTTP and from the command line.
        http_rows = csv_rows(admin.get(f"/admin/studies/{SLUG}/export/votes.csv").text)
    out = tmp_path / "votes.csv"
    vidarena(settings, "export", "votes", SLUG, "-o", str(out))
    cli_rows = csv_rows(out.read_text(encoding="utf-8"))
    with db(engine) as session:
        stored = session.scalar(select(func.count(Vote.id)))
    assert len(http_rows) == len(cli_rows) == stored == sent
    assert {r["criterion"] for r in cli_rows} == set(criteria)
    assert {r["left_arm"] for r in cli_rows} == {"animatediff", "lightning-1step"}
