"""The Celery app factory, task names and broker options, shared by the web app (which sends
render tasks by name and checks the broker) and the render workers (workers/celery_app.py makes
their app here and registers the tasks). Imports no torch and no task code.

Embedded default: kombu's filesystem transport under ./var/broker (no server). Scale-out: Redis.
Clip state lives in SQL rows (app/clips), never in a result backend, so no backend is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from celery import Celery

from app.config import Settings, get_settings

RENDER_QUEUE = "render"
RENDER_TASK = "vidarena.render_clip"
SWEEP_TASK = "vidarena.sweep_leases"
FILESYSTEM_PREFIX = "filesystem://"


def broker_options(broker_url: str) -> tuple[str, dict[str, object]]:
    """Broker URL and transport options; the filesystem transport needs its folders made first."""
    if broker_url.startswith(FILESYSTEM_PREFIX):
        folder = Path(broker_url.removeprefix(FILESYSTEM_PREFIX) or "var/broker").resolve()
        queue = folder / "queue"
        queue.mkdir(parents=True, exist_ok=True)
        # One folder for in and out: both sides of the queue must see the same files.
        return FILESYSTEM_PREFIX, {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(folder / "processed"),
            # Exchange bindings; kombu would otherwise write ./control in the current directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    if broker_url.startswith(("redis://", "rediss://")):
        # A render can take minutes: redeliver only when a worker is truly gone.
        return broker_url, {"visibility_timeout": 6 * 3600}
    return broker_url, {}


def make_celery(settings: Settings | None = None, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app on the configured broker; `include`: the task modules a worker imports."""
    settings = settings or get_settings()
    url, options = broker_options(settings.broker_url)
    app = Celery("vidarena", broker=url, include=list(include))
    app.conf.update(
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_ignore_result=True,
        task_default_queue=RENDER_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        # One process per GPU, one clip at a time: prefetching more would hide work from other
        # GPUs and lose it when the worker dies.
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        # On Redis a message is acknowledged only after the clip is stored, and given back when
        # the worker process dies; the filesystem transport is at-most-once, covered by leases.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_hijack_root_logger=False,
    )
    app.conf.vidarena_settings = settings
    return app
