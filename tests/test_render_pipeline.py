"""The post-render stage overlapped with the next render, through real Celery workers (embedded
filesystem broker and Redis) on SQLite and PostgreSQL, with tiny random-weight models.

A tiny clip encodes in milliseconds, too fast to catch a worker mid-encode. So the tests stop
the worker's encoder processes (SIGSTOP): the real encoder, only held still, as a full-size
clip's seconds-long encode would hold it. While clip N is held in the CPU stage the worker goes
on rendering clip N+1 (the overlap), claims nothing beyond its pipeline's bound, and keeps every
lease alive; killed then, the clips end done exactly once after another worker takes over.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import pytest

from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.clips.models import Clip, ClipStatus
from app.config import Settings
from app.db import session_factory
from app.storage import get_storage
from app.studies.models import Study
from tests.kit.studies import small_study
from tests.kit.workers import (
    encoder_processes,
    kill_worker,
    running_worker,
    signal_processes,
    wait_until,
)

pytestmark = pytest.mark.slow


def clips(session) -> list[Clip]:
    """A fresh read in its own short transaction (a poll must not hold SQLite's write lock)."""
    from sqlalchemy import select

    reader = session_factory(session.get_bind(), read_only=True)
    with reader() as fresh:
        return list(fresh.scalars(select(Clip).order_by(Clip.id)))


def rendered(clip: Clip) -> bool:
    """Through the GPU stage, not yet recorded: in the CPU stage."""
    return clip.status == ClipStatus.rendering and 0 < clip.progress_total == clip.progress_step


def queue(session, study: Study, settings: Settings) -> list[int]:
    ids = clips_service.queue_missing(session=session, study=study, tiny=True)
    session.commit()
    session.close()
    send_renders(settings=settings, clips=[(i, True) for i in ids])
    return ids


def held_encoders(worker, log: Path, count: int = 1) -> list[int]:
    """Wait for the worker's `count` encoders (VIDARENA_ENCODE_WORKERS; started and warmed up
    when the worker is ready), then stop them (SIGSTOP: alive, holding whatever they are given)."""
    wait_until(
        lambda: b"encoder process(es) ready" in log.read_bytes(),
        timeout=180,
        what="the encoders warmed up",
        log=log,
    )
    pids = encoder_processes(worker)
    assert len(pids) == count
    signal_processes(pids, signal.SIGSTOP)
    return pids


def test_the_next_clip_renders_while_one_encodes_and_a_kill_mid_encode_ends_done_once(
    session, render_settings, tmp_path
):
    study = small_study(session)
    log = tmp_path / "worker.log"
    with running_worker(render_settings, log, VIDARENA_ENCODE_WORKERS="1") as first:
        held_encoders(first, log)  # before anything is queued: no clip can slip through
        assert len(queue(session, study, render_settings)) == 4
        # Clip 1 is rendered and waits in the (held) encoder; the GPU stage renders clip 2
        # meanwhile: the stages overlap.
        wait_until(
            lambda: all(rendered(c) for c in clips(session)[:2]),
            timeout=180,
            what="clips 1 and 2 rendered while clip 1 is encoding",
            log=log,
        )
        # Several lease periods later: both leases are still renewed (the worker's own sweeper
        # would have re-queued them), and the bounded pipeline (one encoder, clip 2 waiting for
        # it) has claimed nothing more.
        time.sleep(3 * render_settings.render_lease_seconds)
        now = clips(session)
        assert all(rendered(c) for c in now[:2]), [(c.status, c.progress_step) for c in now]
        assert [c.status for c in now[2:]] == [ClipStatus.queued] * 2
        assert [c.attempts for c in now] == [1, 1, 0, 0]
        kill_worker(first)  # the held encoder dies with the rest of the group
    with running_worker(render_settings, log):
        wait_until(
            lambda: all(c.status == ClipStatus.done for c in clips(session)),
            timeout=240,
            what="every clip done after the kill",
            log=log,
        )
    done = clips(session)
    # Clips 1 and 2 were taken over once after their leases lapsed; 3 and 4 rendered once.
    assert [c.attempts for c in done] == [2, 2, 1, 1]
    assert [c.telemetry["attempt"] for c in done] == [2, 2, 1, 1]
    storage = get_storage(render_settings)
    for clip in done:
        assert storage.read(clip.storage_key)[:6] == b"GIF89a"
        assert clip.telemetry["encode_s"] > 0 and clip.telemetry["total_s"] > 0
        assert clip.progress_step == clip.progress_total


def test_an_encoder_that_dies_loses_its_clips_to_their_leases_and_the_worker_goes_on(
    session, render_settings, tmp_path
):
    study = small_study(session)
    log = tmp_path / "worker.log"
    with running_worker(render_settings, log, VIDARENA_ENCODE_WORKERS="2") as worker:
        held = held_encoders(worker, log, count=2)
        assert len(queue(session, study, render_settings)) == 4
        # Clips 1 and 2 wait in the two (held) encoders; clip 3 is rendered and waits for one.
        wait_until(
            lambda: all(rendered(c) for c in clips(session)[:3]),
            timeout=180,
            what="clips 1 and 2 in the encoders, clip 3 waiting for one",
            log=log,
        )
        victim, survivor = held
        signal_processes([victim], signal.SIGKILL)  # OOM-killed, say
        # The pool breaks: both clips in it are lost (neither is recorded; their leases lapse).
        wait_until(
            lambda: log.read_bytes().count(b"its encoder process died") >= 2,
            timeout=60,
            what="both clips of the broken pool given up",
            log=log,
        )
        # The survivor is the broken pool's to dispose of (the worker kills it); resumed, it
        # must not finish a lost clip behind its waiter's back.
        with contextlib.suppress(ProcessLookupError):
            signal_processes([survivor], signal.SIGCONT)

        # The same worker, its pool replaced, finishes clips 3 and 4 and, once the sweeper has
        # re-queued their lapsed leases, clips 1 and 2.
        def settled() -> bool:  # every clip done, or one failed (it would stay failed)
            statuses = {c.status for c in clips(session)}
            return statuses == {ClipStatus.done} or ClipStatus.failed in statuses

        wait_until(
            settled,
            timeout=240,
            what="every clip done by the same worker after its encoder died",
            log=log,
        )
        assert [c.status for c in clips(session)] == [ClipStatus.done] * 4
        assert worker.poll() is None
        encoders = encoder_processes(worker)
        assert 1 <= len(encoders) <= 2 and not set(encoders) & set(held), (held, encoders)
    done = clips(session)
    assert [c.attempts for c in done] == [2, 2, 1, 1]
    assert [c.telemetry["attempt"] for c in done] == [2, 2, 1, 1]
    storage = get_storage(render_settings)
    for clip in done:
        assert storage.read(clip.storage_key)[:6] == b"GIF89a"
    text = log.read_text()
    assert ": failed" not in text and "cannot schedule new futures" not in text
    assert text.count("its encoder process died") == 2


def test_a_clip_cancelled_while_encoding_stays_cancelled(session, render_settings, tmp_path):
    study = small_study(session, prompts_csv="prompt,theme,seed\na lighthouse,coast,3\n")
    study_id = study.id
    log = tmp_path / "worker.log"
    with running_worker(render_settings, log, VIDARENA_ENCODE_WORKERS="1") as worker:
        pids = held_encoders(worker, log)
        queue(session, study, render_settings)
        wait_until(
            lambda: rendered(clips(session)[0]),
            timeout=180,
            what="the first clip rendered and encoding",
            log=log,
        )
        first = clips(session)[0].id
        with session.begin():
            cancelled = clips_service.cancel(session=session, study=session.get(Study, study_id))
        assert cancelled == 2
        session.close()
        signal_processes(pids, signal.SIGCONT)
        # The encoder finishes the clip, but recording it is refused: it is no longer ours.
        wait_until(
            lambda: f"clip {first}: aborted".encode() in log.read_bytes(),
            timeout=60,
            what="the first clip's outcome",
            log=log,
        )
        assert worker.poll() is None
    after = clips(session)
    assert [c.status for c in after] == [ClipStatus.cancelled] * 2
    assert [c.storage_key for c in after] == [None, None]


def test_a_worker_batches_the_clips_of_an_arm_into_one_denoising_call(
    session, render_settings, tmp_path
):
    study = small_study(session)  # 2 prompts x 2 arms, queued prompt by prompt
    queue(session, study, render_settings)
    log = tmp_path / "worker.log"
    with running_worker(render_settings, log, VIDARENA_RENDER_BATCH="2"):
        wait_until(
            lambda: all(c.status == ClipStatus.done for c in clips(session)),
            timeout=240,
            what="every clip done",
            log=log,
        )
    done = clips(session)
    # The first task of each arm claimed that arm's second clip too; the tasks of those found
    # them taken and skipped them. Every clip rendered once, two per denoising call.
    assert [c.attempts for c in done] == [1, 1, 1, 1]
    assert [c.telemetry["batch_size"] for c in done] == [2, 2, 2, 2]
    by_arm: dict[int, set[str]] = {}
    for clip in done:
        by_arm.setdefault(clip.arm_id, set()).add(clip.task_id)
    assert all(len(tasks) == 1 for tasks in by_arm.values())  # one task per arm's batch
    assert log.read_text().count("skipped") >= 2
    storage = get_storage(render_settings)
    assert len({storage.read(c.storage_key) for c in done}) == 4
