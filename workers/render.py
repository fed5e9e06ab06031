"""Render one clip: claim it, render, encode the GIF, store it, mark it done.

The order is what makes re-runs safe: the clip row is claimed first (status `rendering` with a
lease), the GIF goes to storage under its content hash (atomic; the same bytes give the same
key), and only then does the lease holder mark the row done. A worker that dies at any point
leaves either no object or an unreferenced one, and a clip that another worker takes over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, OperationalError

from app.clips import service as clips_service

# Imported when the worker starts, not inside the first task: importing torch takes seconds.
from app.clips.gif import encode_gif, gif_info
from app.clips.measures import measure_or_none
from app.config import Settings
from app.db import get_engine, session_scope
from app.rating import matchups
from app.storage import StorageError, get_storage
from app.studies.schemas import ArmSpec
from workers.pipelines import MissingWeightsError, get_renderer

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.5


class RenderAborted(Exception):
    """The clip was cancelled or taken over by another worker while rendering."""


class TransientRenderError(Exception):
    """Worth retrying: storage or database briefly unreachable."""


@dataclass(frozen=True)
class Outcome:
    status: str  # done | skipped | aborted | failed | retry
    detail: str = ""


def render_clip(*, clip_id: int, task_id: str, settings: Settings, last_try: bool) -> Outcome:
    """Render one clip end to end. Transient failures re-queue it unless this is the last try."""
    engine = get_engine(settings)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with session_scope(engine) as session:
        job = clips_service.claim(
            session=session,
            clip_id=clip_id,
            task_id=task_id,
            worker=worker,
            lease_s=settings.render_lease_seconds,
        )
    if job is None:
        return Outcome("skipped", "not queued, or another worker holds it")
    try:
        with LeaseKeeper(settings, clip_id, task_id) as lease:
            return _render(job=job, task_id=task_id, settings=settings, lost=lease.lost)
    except RenderAborted as exc:
        return Outcome("aborted", str(exc))
    except TransientRenderError as exc:
        message = f"attempt {job.attempts}: {exc}"
        _record_failure(settings, clip_id, task_id, message, requeue=not last_try)
        if last_try:
            return Outcome("failed", message)
        return Outcome("retry", message)
    except Exception as exc:
        if not isinstance(exc, MissingWeightsError):
            log.exception("clip %s failed", clip_id)
        # Permanent: missing weights or a bug. Failing once beats a crash loop.
        message = (
            str(exc) if isinstance(exc, MissingWeightsError) else f"{type(exc).__name__}: {exc}"
        )
        _record_failure(settings, clip_id, task_id, message, requeue=False)
        return Outcome("failed", message)


class LeaseKeeper:
    """Renews the clip's lease from a thread while this process lives, so a slow model load
    never looks like a dead worker; notices when the clip stops being ours (cancel, takeover)."""

    def __init__(self, settings: Settings, clip_id: int, task_id: str) -> None:
        self.settings, self.clip_id, self.task_id = settings, clip_id, task_id
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{clip_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = max(0.2, self.settings.render_lease_seconds / 3)
        while not self._stop.wait(interval):
            try:
                with session_scope(get_engine(self.settings)) as session:
                    ours = clips_service.renew_lease(
                        session=session,
                        clip_id=self.clip_id,
                        task_id=self.task_id,
                        lease_s=self.settings.render_lease_seconds,
                    )
            except Exception:  # a blip: the next renewal or the lease margin covers it
                log.warning("could not renew the lease of clip %s", self.clip_id, exc_info=True)
                continue
            if not ours:
                self.lost.set()
                return


def _render(
    *, job: clips_service.ClipJob, task_id: str, settings: Settings, lost: threading.Event
) -> Outcome:
    started = time.perf_counter()
    arm = ArmSpec.model_validate(job.arm_spec)
    renderer = get_renderer(arm, tiny=job.tiny, tiny_root=settings.var_dir / "tiny-models")
    rendered = renderer.render(
        prompt=job.prompt,
        seed=job.seed,
        on_step=_progress(settings, job.clip_id, task_id, lost),
    )
    encode_started = time.perf_counter()
    data = encode_gif(rendered.frames, fps=arm.fps)
    info = gif_info(data)
    measures = measure_or_none(data, num_frames=len(rendered.frames))  # motion, flicker...
    telemetry = {
        **rendered.telemetry,
        "encode_s": round(time.perf_counter() - encode_started, 4),
        "total_s": round(time.perf_counter() - started, 4),
        "fps": arm.fps,
        "attempt": job.attempts,
    }
    try:
        stored = get_storage(settings).put(data, suffix=".gif")
        with session_scope(get_engine(settings)) as session:
            finished = clips_service.finish(
                session=session,
                clip_id=job.clip_id,
                task_id=task_id,
                storage_key=stored.key,
                sha256=stored.sha256,
                size_bytes=stored.size,
                # Not info["frames"]: the GIF merges frames that quantize identically.
                num_frames=len(rendered.frames),
                width=info["width"],
                height=info["height"],
                duration_ms=info["duration_ms"],
                telemetry=telemetry,
            )
            if finished:
                # New pairs become ratable as soon as both clips of a prompt exist.
                matchups.ensure_matchups_for_prompt(session=session, clip_id=job.clip_id)
                clips_service.record_measures(
                    session=session, clip_id=job.clip_id, measures=measures
                )
    except (StorageError, OperationalError, DBAPIError) as exc:
        raise TransientRenderError(f"{type(exc).__name__}: {exc}") from exc
    if not finished:
        raise RenderAborted("the clip was cancelled or taken over before it was stored")
    return Outcome("done", stored.key)


def _progress(
    settings: Settings, clip_id: int, task_id: str, lost: threading.Event
) -> Callable[[int, int], None]:
    """on_step callback: throttled progress writes that renew the lease and notice cancels."""
    last = 0.0

    def on_step(step: int, total: int) -> None:
        nonlocal last
        if lost.is_set():
            raise RenderAborted(f"clip {clip_id} was cancelled or taken over at step {step}")
        now = time.monotonic()
        if step < total and now - last < PROGRESS_EVERY_S:
            return
        last = now
        with session_scope(get_engine(settings)) as session:
            still_ours = clips_service.report_progress(
                session=session,
                clip_id=clip_id,
                task_id=task_id,
                step=step,
                total=total,
                lease_s=settings.render_lease_seconds,
            )
        if not still_ours:
            raise RenderAborted(f"clip {clip_id} was cancelled or taken over at step {step}")

    return on_step


def _record_failure(
    settings: Settings, clip_id: int, task_id: str, message: str, *, requeue: bool
) -> None:
    with session_scope(get_engine(settings)) as session:
        clips_service.fail(
            session=session, clip_id=clip_id, task_id=task_id, error=message, requeue=requeue
        )
