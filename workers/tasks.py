"""Celery tasks. They take ids and re-read everything from SQL, so a re-run is harmless."""

from __future__ import annotations

import logging
import random
import threading
import time

from celery import Task
from celery.signals import worker_ready, worker_shutdown

from app.broker import RENDER_TASK, SWEEP_TASK
from app.clips import service as clips_service
from app.clips.dispatch import send_renders
from app.config import get_settings
from app.db import get_engine, session_scope
from app.ops import metrics as ops_metrics
from app.ops.logging import connect_celery_signals
from workers.celery_app import celery_app
from workers.render import render_clip as render_one

log = logging.getLogger(__name__)


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
    outcome = render_one(clip_id=clip_id, task_id=task_id, settings=settings, last_try=last_try)
    ops_metrics.record_render(
        outcome.status,
        clips_service.arm_kind_of(get_engine(settings), clip_id),
        time.perf_counter() - started,
    )
    log.info("clip %s: %s %s", clip_id, outcome.status, outcome.detail)
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
    threading.Thread(target=_sweeper, name="lease-sweeper", daemon=True).start()


@worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    _stop.set()
