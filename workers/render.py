"""Render clips in two overlapping stages: the GPU stage in the task, the CPU stage in encoders.

    task for clip N:     claim ─ render (GPU) ─ hand off ┐ (the task returns; the GPU is free)
    encoder process:                                     └─ post_render: encode → measure →
                                                            upload → record (clip N)
    task for clip N+1:                     claim ─ render (GPU) ─ hand off ┐ ...

The GPU stage (claim, load, denoise, decode) runs in the Celery task, one clip at a time per
worker (the solo pool: the main thread owns the GPU). It then hands the raw frames to
`post_render`, the post-render CPU stage, which runs in a pool of `VIDARENA_ENCODE_WORKERS`
encoder processes (spawned once per worker; see `EncoderPool`), and the task returns, so Celery
acknowledges the message and the worker takes the next clip while clip N is still encoding. A
worker's throughput is then its slowest stage's, not the sum of the stages: the GPU never waits
for an encode unless every encoder is busy.

The pipeline is bounded: at most `encode_workers` clips per worker are handed off and not yet
recorded. A hand-off beyond that blocks the task until an encoder is free, so a GPU faster than
its encoders waits for them (its throughput becomes theirs) instead of piling up frames in
memory, and a worker never holds more than one unstarted clip (the message it is rendering).

With VIDARENA_RENDER_BATCH = N > 1, a task claims up to N - 1 more queued clips of its clip's
arm (`clips.service.claim_batch`, under its own task id and leases) and renders them all in one
denoising call (`Renderer.render_batch`: the same clips as one at a time); each is then handed
off on its own, and their own tasks, when they come, find them taken and skip them.

Why the task returns at the hand-off rather than when clip N is stored. The clip's durability
never rested on the broker's acknowledgement: a worker that dies (SIGKILL, OOM, power) never
acknowledges on the solo pool, and Redis redelivers an unacknowledged message only after its
visibility timeout (hours), the filesystem broker never. What re-queues a dead worker's clip is
its lease: the clip row stays `rendering` with a lease its worker renews (`LeaseKeeper`, a thread
of the worker process, which keeps renewing while the clip is in an encoder), and every worker's
sweeper re-queues a clip whose lease lapsed. That holds after the hand-off exactly as before it,
so a worker killed while encoding leaves a clip that another worker renders again, and `done`
still happens once (`clips.service.finish` is a conditional UPDATE that only the lease holder
can make). Keeping the task open until the clip is stored would instead need a threads pool with
one message reserved per pipeline slot, hiding up to `encode_workers` unstarted clips from other
GPUs at the end of a batch.

What changes after the hand-off: a transient storage or database error in the CPU stage is
retried there (the frames are in hand: no reason to render again), `VIDARENA_RENDER_MAX_RETRIES`
times with exponential backoff and jitter, then the clip fails (the render panel re-queues failed
clips); a cancel or takeover during the CPU stage makes `finish` refuse, and the clip stays
cancelled; an encoder process that dies takes no decision: the lease lapses and the clip is
re-queued. A warm shutdown (SIGTERM) finishes the task at hand, then waits for the clips in the
encoders (`drain`); encoders ignore SIGTERM and SIGINT so that a signal to the whole process
group does not kill them mid-clip.

Torch is imported by `workers.tasks` when the worker starts, and here only inside the GPU stage:
encoder processes import this module (to run `post_render`) and need no torch.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.exc import DBAPIError, OperationalError

from app.clips import service as clips_service
from app.clips.gif import encode_gif, gif_info
from app.clips.measures import Measured, measure_or_none
from app.config import Settings
from app.db import get_engine, session_scope
from app.rating import matchups
from app.storage import StorageError, get_storage
from app.studies.schemas import ArmSpec

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.5
# Backoff between the CPU stage's tries: full jitter over 2, 4, 8, ... s, capped.
RETRY_CAP_S = 60.0


class RenderAborted(Exception):
    """The clip was cancelled or taken over by another worker while rendering."""


class TransientRenderError(Exception):
    """Worth retrying: storage or database briefly unreachable."""


@dataclass(frozen=True)
class Outcome:
    status: str  # done | skipped | aborted | failed | retry | handed_off
    detail: str = ""


OnFinished = Callable[[int, Outcome], None]  # (clip id, its final outcome)


class Lease(Protocol):
    """What the CPU stage needs of a clip's lease: to stop renewing it once the clip is settled."""

    def stop(self) -> None: ...


def render_clip(
    *,
    clip_id: int,
    task_id: str,
    settings: Settings,
    last_try: bool,
    on_finished: OnFinished | None = None,
) -> Outcome:
    """The GPU stage of one clip, then the hand-off to the CPU stage.

    With VIDARENA_RENDER_BATCH > 1 the task also claims up to that many less one queued clips of
    the same arm and renders them in the same denoising call; each is handed off on its own.
    Returns `handed_off` once the frames are with an encoder (each clip's final outcome is then
    passed to `on_finished`, later, from another thread), or the final outcome of `clip_id` when
    it ended in this stage: skipped, aborted, failed, or retry (a transient error, re-queued
    unless this is the last try). The other clips of a batch that ends here are queued again
    with tasks of their own (a cancelled one stays cancelled), or fail with it for good.
    """
    from workers.pipelines import MissingWeightsError  # torch: see the module docstring

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
        jobs = [] if job is None else [job]
        if job is not None and settings.render_batch > 1:
            jobs += clips_service.claim_batch(
                session=session,
                job=job,
                task_id=task_id,
                worker=worker,
                lease_s=settings.render_lease_seconds,
                limit=settings.render_batch - 1,
            )
    if job is None:
        return Outcome("skipped", "not queued, or another worker holds it")
    leases = [LeaseKeeper(settings, j.clip_id, task_id).start() for j in jobs]

    def settle(*, requeue: bool, message: str, own: bool = False) -> None:
        for lease in leases:
            lease.stop()
        others = [j.clip_id for j in (jobs if own else jobs[1:])]
        if others:
            _settle_others(settings, others, task_id, message, requeue=requeue, tiny=job.tiny)

    try:
        works = _render(jobs=jobs, task_id=task_id, settings=settings, leases=leases)
    except RenderAborted as exc:
        # Every clip of the batch still ours (this task's too, when another was the one
        # cancelled) goes back to the queue; the cancelled one stays cancelled.
        settle(requeue=True, message=f"its batch stopped: {exc}", own=True)
        return Outcome("aborted", str(exc))
    except TransientRenderError as exc:
        message = f"attempt {job.attempts}: {exc}"
        settle(requeue=True, message=message)
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
        settle(requeue=False, message=message)
        _record_failure(settings, clip_id, task_id, message, requeue=False)
        return Outcome("failed", message)
    pool = encoder_pool(settings)
    waited = sum(
        pool.hand_off(work, lease=lease, on_finished=on_finished)
        for work, lease in zip(works, leases, strict=True)
    )
    return Outcome("handed_off", f"{len(works)} clip(s), waited {waited:.3f} s for encoders")


def _settle_others(
    settings: Settings,
    clip_ids: list[int],
    task_id: str,
    message: str,
    *,
    requeue: bool,
    tiny: bool,
) -> None:
    """The other clips of a batch that ended in the GPU stage: failed with it, or queued again
    with a task each (only those still ours: a cancelled clip stays cancelled)."""
    from app.clips.dispatch import send_renders

    with session_scope(get_engine(settings)) as session:
        ours = [
            other
            for other in clip_ids
            if clips_service.fail(
                session=session, clip_id=other, task_id=task_id, error=message, requeue=requeue
            )
        ]
    if requeue and ours:
        send_renders(settings=settings, clips=[(other, tiny) for other in ours])


class LeaseKeeper:
    """Renews the clip's lease from a thread while this process lives, so a slow model load or
    a clip waiting in an encoder never looks like a dead worker; notices when the clip stops
    being ours (cancel, takeover)."""

    def __init__(self, settings: Settings, clip_id: int, task_id: str) -> None:
        self.settings, self.clip_id, self.task_id = settings, clip_id, task_id
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{clip_id}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

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


# --- the GPU stage ----------------------------------------------------------------------------


def _render(
    *,
    jobs: list[clips_service.ClipJob],
    task_id: str,
    settings: Settings,
    leases: list[LeaseKeeper],
) -> list[PostRender]:
    """Render the clips of one arm (one, or a batch) in one denoising call."""
    import torch  # see the module docstring

    from workers.measure_text import record_text_similarity
    from workers.pipelines import get_renderer

    started = time.time()
    arm = ArmSpec.model_validate(jobs[0].arm_spec)
    renderer = get_renderer(
        arm,
        tiny=jobs[0].tiny,
        tiny_root=settings.var_dir / "tiny-models",
        compile_models=settings.render_compile,
    )
    reports = [
        _progress(settings, job.clip_id, task_id, lease.lost)
        for job, lease in zip(jobs, leases, strict=True)
    ]

    def on_step(step: int, total: int) -> None:
        for report in reports:
            report(step, total)

    prompts, seeds = [job.prompt for job in jobs], [job.seed for job in jobs]
    try:
        rendered = renderer.render_batch(prompts=prompts, seeds=seeds, on_step=on_step)
    except torch.OutOfMemoryError:
        if len(jobs) == 1:
            raise
        # The batch did not fit: the same clips one at a time (the same frames: render_batch).
        log.warning("a batch of %d clips ran out of GPU memory; one at a time", len(jobs))
        torch.cuda.empty_cache()
        rendered = [
            renderer.render(prompt=job.prompt, seed=job.seed, on_step=report)
            for job, report in zip(jobs, reports, strict=True)
        ]
    works = []
    for job, clip in zip(jobs, rendered, strict=True):
        # The optional CLIP text similarity (VIDARENA_CLIP_MODEL), on the GPU with the frames
        # in hand.
        record_text_similarity(
            settings=settings, clip_id=job.clip_id, prompt=job.prompt, frames=clip.frames
        )
        works.append(
            PostRender(
                settings=settings,
                clip_id=job.clip_id,
                task_id=task_id,
                frames=clip.frames,
                fps=arm.fps,
                telemetry={**clip.telemetry, "attempt": job.attempts},
                started_at=started,
            )
        )
    return works


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


# --- the post-render CPU stage ----------------------------------------------------------------


@dataclass
class PostRender:
    """What the CPU stage needs of one rendered clip (pickled to an encoder process)."""

    settings: Settings
    clip_id: int
    task_id: str
    frames: list[Image.Image]
    fps: int
    telemetry: dict[str, Any]
    started_at: float  # time.time() when the GPU stage began
    handed_off_at: float = 0.0
    waited_s: float = 0.0  # how long the GPU stage waited for a free encoder


def post_render(work: PostRender) -> Outcome:
    """The post-render CPU stage of one clip: encode → measure → upload → record.

    Runs in an encoder process while the worker's GPU renders the next clip. Storage and
    database errors are retried here (see the module docstring); RenderAborted when the clip was
    cancelled or taken over meanwhile; TransientRenderError when the tries ran out.
    """
    encode_started = time.perf_counter()
    data = encode_gif(work.frames, fps=work.fps)
    info = gif_info(data)
    encode_s = time.perf_counter() - encode_started
    measure_started = time.perf_counter()
    measures = measure_or_none(data, num_frames=len(work.frames))  # motion, flicker...
    telemetry = {
        **work.telemetry,
        "encode_s": round(encode_s, 4),
        "measure_s": round(time.perf_counter() - measure_started, 4),
        "encode_queue_s": round(max(0.0, time.time() - work.handed_off_at), 4),
        "encode_wait_s": round(work.waited_s, 4),
        "fps": work.fps,
    }
    tries = work.settings.render_max_retries + 1
    for attempt in range(1, tries + 1):
        try:
            # total_s: from the start of the GPU stage to the clip recorded (retries included).
            telemetry["total_s"] = round(time.time() - work.started_at, 4)
            return _store_and_record(
                work, data=data, info=info, telemetry=telemetry, measures=measures
            )
        except TransientRenderError as exc:
            if attempt == tries:
                raise TransientRenderError(f"{exc} ({tries} tries)") from None
            delay = random.uniform(0, min(RETRY_CAP_S, 2.0**attempt))
            log.warning("clip %s: %s; trying again in %.1f s", work.clip_id, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _store_and_record(
    work: PostRender,
    *,
    data: bytes,
    info: dict[str, Any],
    telemetry: dict[str, Any],
    measures: dict[str, Measured],
) -> Outcome:
    settings = work.settings
    try:
        stored = get_storage(settings).put(data, suffix=".gif")
        with session_scope(get_engine(settings)) as session:
            finished = clips_service.finish(
                session=session,
                clip_id=work.clip_id,
                task_id=work.task_id,
                storage_key=stored.key,
                sha256=stored.sha256,
                size_bytes=stored.size,
                # Not info["frames"]: the GIF merges frames that quantize identically.
                num_frames=len(work.frames),
                width=info["width"],
                height=info["height"],
                duration_ms=info["duration_ms"],
                telemetry=telemetry,
            )
            if finished:
                # New pairs become ratable as soon as both clips of a prompt exist.
                matchups.ensure_matchups_for_prompt(session=session, clip_id=work.clip_id)
                clips_service.record_measures(
                    session=session, clip_id=work.clip_id, measures=measures
                )
    except (StorageError, OperationalError, DBAPIError) as exc:
        raise TransientRenderError(f"{type(exc).__name__}: {exc}") from None
    if not finished:
        raise RenderAborted("the clip was cancelled or taken over before it was stored")
    return Outcome("done", stored.key)


def _post_render_in_encoder(work: PostRender) -> Outcome:
    """post_render as an encoder process runs it: only simple exceptions cross back (an
    arbitrary one, e.g. a driver's, may not survive pickling)."""
    try:
        return post_render(work)
    except (RenderAborted, TransientRenderError):
        raise
    except Exception as exc:
        log.exception("clip %s: the post-render stage failed", work.clip_id)
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None


def _encoder_started() -> None:
    """Encoder process initializer: outlive a signal sent to the worker's whole process group
    (the worker drains its encoders on a warm shutdown), and log like the worker."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _warm_up() -> int:
    return os.getpid()


class EncoderPool:
    """This worker's encoder processes and the bound on clips handed to them.

    `hand_off` blocks while `workers` clips are in the CPU stage, then gives the clip to a waiter
    thread, which submits `post_render` to the process pool, keeps the clip's lease renewed until
    it returns, records what it could not (a failure) and reports the final outcome.
    """

    def __init__(
        self, workers: int, *, stage: Callable[[PostRender], Outcome] | None = None
    ) -> None:
        self.workers = workers
        # What an encoder runs per clip: post_render; benchmarks/pipeline.py swaps in a stage
        # without the database (a picklable module-level function).
        self._stage = stage or _post_render_in_encoder
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._processes = self._new_processes()
        self._waiters = ThreadPoolExecutor(workers, thread_name_prefix="post-render")
        self._in_flight: set[Future[None]] = set()

    def _new_processes(self) -> ProcessPoolExecutor:
        # spawn: the worker process holds CUDA, threads and sockets, none of which survive fork.
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=_encoder_started)

    def warm_up(self, *, timeout: float = 120.0) -> list[int]:
        """Start every encoder process now (each imports the encoder's modules once), so the
        first clips do not pay for it; returns their pids."""
        futures = [self._processes.submit(_warm_up) for _ in range(self.workers)]
        return [future.result(timeout=timeout) for future in futures]

    def hand_off(self, work: PostRender, *, lease: Lease, on_finished: OnFinished | None) -> float:
        """Give a rendered clip to the CPU stage; returns the seconds spent waiting for a slot."""
        started = time.perf_counter()
        self._slots.acquire()
        work.waited_s = time.perf_counter() - started
        work.handed_off_at = time.time()
        future = self._waiters.submit(self._finish, work, lease, on_finished)
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._forget)
        return work.waited_s

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def _finish(self, work: PostRender, lease: Lease, on_finished: OnFinished | None) -> None:
        settings, clip_id, task_id = work.settings, work.clip_id, work.task_id
        processes: ProcessPoolExecutor | None = None
        try:
            try:
                processes, future = self._submit(work)
                outcome = future.result()
            except RenderAborted as exc:
                outcome = Outcome("aborted", str(exc))
            except BrokenProcessPool:
                # No decision here: the lease stops being renewed below, lapses, and a sweeper
                # re-queues the clip.
                log.error("clip %s: its encoder process died; its lease will re-queue it", clip_id)
                outcome = Outcome("lost", "the encoder process died")
                if processes is not None:
                    self._replace_broken_pool(processes)
            except Exception as exc:  # TransientRenderError after its tries, or a bug
                lease.stop()
                outcome = Outcome("failed", str(exc))
                try:
                    _record_failure(settings, clip_id, task_id, str(exc), requeue=False)
                except Exception:  # unrecorded: the lease lapses and the clip is re-queued
                    log.exception("clip %s: could not record its failure", clip_id)
            lease.stop()
            if on_finished is not None:
                try:
                    on_finished(clip_id, outcome)
                except Exception:
                    log.exception("clip %s: reporting its outcome failed", clip_id)
        finally:
            self._slots.release()

    def _submit(self, work: PostRender) -> tuple[ProcessPoolExecutor, Future[Outcome]]:
        """Submit to the current pool; returns it too, so that a break is blamed on that pool."""
        with self._lock:
            processes = self._processes
        try:
            return processes, processes.submit(self._stage, work)
        except BrokenProcessPool:  # broke before this clip reached it: not lost, the next takes it
            processes = self._replace_broken_pool(processes)
            return processes, processes.submit(self._stage, work)

    def _replace_broken_pool(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """Every clip of a broken pool ends here; returns the pool that replaced it."""
        with self._lock:
            # Only the first swaps: by a later one's turn `self._processes` is the new pool.
            if self._processes is broken:
                self._processes = self._new_processes()
            current = self._processes
        # Encoders ignore SIGTERM, so the executor's terminate leaves a survivor running the
        # broken pool's clips behind their "lost" (or stuck on a queue lock the dead one held).
        for process in list((broken._processes or {}).values()):
            process.kill()
        broken.shutdown(wait=False, cancel_futures=True)
        return current

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the clips in the CPU stage; True when none is left."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._in_flight)
            if not pending:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(Exception):
                pending[0].result(timeout=remaining)

    def shutdown(self, *, wait: bool = False) -> None:
        self._waiters.shutdown(wait=wait, cancel_futures=True)
        self._processes.shutdown(wait=wait, cancel_futures=True)


_pool: EncoderPool | None = None
_pool_lock = threading.Lock()


def encoder_pool(settings: Settings) -> EncoderPool:
    """This process's encoder pool (`VIDARENA_ENCODE_WORKERS` processes), made on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = EncoderPool(settings.resolved_encode_workers)
        return _pool


def shutdown_encoders(*, timeout: float) -> bool:
    """On a warm shutdown: wait for the clips in the CPU stage, then stop the encoders."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is None:
        return True
    drained = pool.drain(timeout)
    pool.shutdown()
    return drained


def _record_failure(
    settings: Settings, clip_id: int, task_id: str, message: str, *, requeue: bool
) -> None:
    with session_scope(get_engine(settings)) as session:
        clips_service.fail(
            session=session, clip_id=clip_id, task_id=task_id, error=message, requeue=requeue
        )
