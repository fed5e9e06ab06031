"""Celery tasks. They take ids and re-read everything from SQL, so a re-run is harmless."""

from __future__ import annotations

import logging
import random
import threading
import time

from celery import Task
from celery.signals import worker_ready, worker_shutdown

# Imported when the worker starts, not inside the first task: importing torch takes seconds
# (workers.render imports it only inside the GPU stage, for its encoder processes' sake).
import workers.pipelines  # noqa: F401
from app.broker import RENDER_TASK, SWEEP_TASK
from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.config import get_settings
from app.db import get_engine, session_scope
from app.ops import metrics as ops_metrics
from app.ops.logging import connect_celery_signals
from workers.celery_app import celery_app
from workers.render import Outcome, encoder_pool, shutdown_encoders
from workers.render import render_clip as render_one

log = logging.getLogger(__name__)
ENCODER_DRAIN_S = 45.0


def _quiet_library_progress_bars() -> None:
    """Weight-loading progress bars are noise in a worker log; steps are reported in SQL."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated


_quiet_library_progress_bars()
connect_celery_signals()  # JSON logs with task ids (VIDARENA_LOG_FORMAT), secrets redacted


@celery_app.task(name=RENDER_TASK, bind=True, acks_late=True)
def render_clip(self: Task[[int, bool], str], clip_id: int, tiny: bool = False) -> str:
    """Render clip `clip_id`; `tiny` is recorded on the clip row when it is queued."""
    settings = get_settings()
    retries = self.request.retries
    last_try = retries >= settings.render_max_retries
    started = time.perf_counter()
    task_id = self.request.id
    assert task_id is not None  # a worker always runs a task with its id

    def finished(clip: int, outcome: Outcome) -> None:
        """A clip's final outcome (this task's, or another of its batch): now, or later from
        the post-render stage."""
        ops_metrics.record_render(
            outcome.status,
            clips_service.arm_kind_of(get_engine(settings), clip),
            time.perf_counter() - started,
        )
        log.info("clip %s: %s %s", clip, outcome.status, outcome.detail)

    outcome = render_one(
        clip_id=clip_id,
        task_id=task_id,
        settings=settings,
        last_try=last_try,
        on_finished=finished,
    )
    if outcome.status == "handed_off":  # the GPU is free; an encoder finishes the clip
        log.info("clip %s: rendered, %s", clip_id, outcome.detail)
        return outcome.status
    finished(clip_id, outcome)
    if outcome.status == "retry":
        # Exponential backoff with full jitter, capped at five minutes.
        countdown = random.uniform(0, min(300, 2 ** (retries + 1)))
        raise self.retry(countdown=countdown, max_retries=settings.render_max_retries)
    return outcome.status


@celery_app.task(name=SWEEP_TASK)
def sweep_leases() -> int:
    """Re-queue clips whose worker stopped renewing its lease (it died or hung)."""
    settings = get_settings()
    with session_scope(get_engine(settings)) as session:
        stale = clips_service.expire_leases(session=session)
    if stale:
        log.warning("re-queueing %d clip(s) whose worker stopped: %s", len(stale), stale)
        send_renders(settings=settings, clips=stale)
    return len(stale)


def _recover_queued() -> None:
    """The filesystem broker loses the messages a dead worker had taken: resend every queued
    clip. Duplicates are harmless, since a task only renders a clip it can claim."""
    settings = get_settings()
    if not settings.broker_url.startswith("filesystem://"):
        return
    with session_scope(get_engine(settings), read_only=True) as session:
        queued = clips_service.queued_clips(session=session)
    if queued:
        log.info("resending %d queued clip(s) after start", len(queued))
        send_renders(settings=settings, clips=queued)


_stop = threading.Event()


def _sweeper() -> None:
    interval = max(1.0, min(30.0, get_settings().render_lease_seconds / 3))
    while not _stop.wait(interval):
        try:
            sweep_leases()
        except Exception:
            log.exception("lease sweep failed; trying again in %.0f s", interval)


@worker_ready.connect
def _start_sweeper(**_: object) -> None:
    try:
        ops_metrics.start_worker_server(get_settings().worker_metrics_port)
    except OSError:
        log.exception("cannot serve worker metrics on VIDARENA_WORKER_METRICS_PORT")
    try:
        sweep_leases()
        _recover_queued()
    except Exception:
        log.exception("start-up recovery failed")
    # Encoders start beside the first render, not before it (a first clip renders for seconds).
    threading.Thread(target=_warm_up_encoders, name="encoder-warm-up", daemon=True).start()
    threading.Thread(target=_sweeper, name="lease-sweeper", daemon=True).start()


def _warm_up_encoders() -> None:
    try:
        pids = encoder_pool(get_settings()).warm_up()
        log.info("%d encoder process(es) ready: %s", len(pids), pids)
    except Exception:
        log.exception("could not start the encoder processes")


@worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    _stop.set()
    # Clips still in the post-render stage: finish them (compose gives a worker 60 s to stop);
    # any left when it is killed are re-queued by their leases.
    if not shutdown_encoders(timeout=ENCODER_DRAIN_S):
        log.warning("stopped with clips still encoding; their leases will re-queue them")
