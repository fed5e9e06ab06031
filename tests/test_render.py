"""Rendering through real Celery workers (embedded filesystem broker and Redis), on SQLite and
PostgreSQL, with tiny random-weight models standing in for the real weights."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.clips.models import Clip, ClipStatus
from app.config import Settings
from app.db import session_factory
from app.storage import get_storage
from tests.kit.studies import small_study
from tests.kit.workers import kill_worker, running_worker, wait_until

pytestmark = pytest.mark.slow

SLOW_PROMPTS = "prompt,theme,seed\na slow river under a bridge,nature,11\n"


def clips(session) -> list[Clip]:
    """A fresh read in its own short transaction: a poll must not hold SQLite's write lock."""
    reader = session_factory(session.get_bind(), read_only=True)
    with reader() as fresh:
        found = list(fresh.scalars(select(Clip).options(selectinload(Clip.arm)).order_by(Clip.id)))
        return found


def queue(session, study, settings: Settings, *, tiny: bool = True) -> list[int]:
    ids = clips_service.queue_missing(session=session, study=study, tiny=tiny)
    session.commit()
    session.close()
    send_renders(settings=settings, clips=[(i, tiny) for i in ids])
    return ids


def test_a_worker_renders_every_clip_into_storage(session, render_settings, tmp_path):
    study = small_study(session)
    queue(session, study, render_settings)
    log = tmp_path / "worker.log"
    with running_worker(render_settings, log):
        wait_until(
            lambda: all(c.status == ClipStatus.done for c in clips(session)),
            timeout=240,
            what="every clip done",
            log=log,
        )
    storage = get_storage(render_settings)
    done = clips(session)
    assert len(done) == 4
    for clip in done:
        assert storage.exists(clip.storage_key)
        data = storage.read(clip.storage_key)
        assert data[:6] == b"GIF89a"
        assert clip.size_bytes == len(data)
        assert (clip.num_frames, clip.duration_ms) == (4, 500)  # 4 frames at 8 fps
        assert clip.attempts == 1
        assert clip.tiny is True
        t = clip.telemetry
        assert t["denoise_s"] > 0 and t["decode_s"] > 0 and t["encode_s"] > 0
        assert t["device"] == "cpu" and t["torch_version"] and t["diffusers_version"]
        assert t["peak_memory_bytes"] > 0
        arm = clip.arm.arm_spec
        assert t["denoiser_passes"] == arm.denoiser_passes
        assert t["models"]["base_model"]
    # Keys are content hashes: nothing in them names an arm or a prompt.
    for clip in done:
        assert clip.arm.name not in clip.storage_key
        assert clip.sha256 in clip.storage_key


def test_missing_weights_fail_once_with_the_model_id(session, render_settings, tmp_path):
    study = small_study(session, prompts_csv="prompt,theme,seed\na lighthouse,coast,3\n")
    queue(session, study, render_settings, tiny=False)
    log = tmp_path / "worker.log"
    with running_worker(render_settings, log):
        wait_until(
            lambda: all(c.status == ClipStatus.failed for c in clips(session)),
            timeout=120,
            what="both clips failed",
            log=log,
        )
    for clip in clips(session):
        assert clip.attempts == 1  # permanent: no crash loop
        assert clip.arm.arm_spec.base_model in clip.error or (
            clip.arm.arm_spec.motion_adapter in clip.error
        )
        assert "local path" in clip.error or "download" in clip.error


def test_a_worker_killed_mid_render_still_ends_done_exactly_once(
    session, render_settings, tmp_path
):
    study = small_study(session, prompts_csv=SLOW_PROMPTS)
    slow = next(a for a in study.arms if a.name == "slow")
    # Long enough (several seconds) to kill mid-way: tiny models render at 1/8 of this size.
    slow.spec = {**slow.spec, "steps": 50, "num_frames": 16, "width": 1024, "height": 1024}
    session.commit()
    queue(session, study, render_settings)
    log = tmp_path / "worker.log"

    def slow_clip() -> Clip:
        return next(c for c in clips(session) if c.arm_id == slow.id)

    with running_worker(render_settings, log) as first:
        wait_until(
            lambda: slow_clip().status == ClipStatus.rendering and slow_clip().progress_step >= 2,
            timeout=180,
            what="the slow clip to be mid-render",
            log=log,
        )
        kill_worker(first)
    killed_at_step = slow_clip().progress_step
    assert slow_clip().status == ClipStatus.rendering  # nobody knows yet
    with running_worker(render_settings, log):
        wait_until(
            lambda: all(c.status == ClipStatus.done for c in clips(session)),
            timeout=180,
            what="every clip done after the crash",
            log=log,
        )
    clip = slow_clip()
    assert clip.attempts == 2, f"killed at step {killed_at_step}"
    assert clip.progress_step == 50
    assert get_storage(render_settings).exists(clip.storage_key)
