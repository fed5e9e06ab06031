"""The Celery app factory, task names and broker options, shared by the web app (which sends
render tasks by name and checks the broker) and the render workers (workers/celery_app.py makes
their app here and registers the tasks). Imports no torch and no task code.

Embedded default: kombu's filesystem transport under ./var/broker (no server), with message
files that appear whole or not at all (`FilesystemTransport`). Scale-out: Redis. Clip state lives
in SQL rows (app/clips), never in a result backend, so no backend is configured.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from time import monotonic
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from app.config import Settings, get_settings

log = logging.getLogger(__name__)

RENDER_QUEUE = "render"
RENDER_TASK = "vidarena.render_clip"
SWEEP_TASK = "vidarena.sweep_leases"
FILESYSTEM_PREFIX = "filesystem://"
# A message file being written: consumers take only names ending ".<queue>.msg".
PARTIAL_SUFFIX = ".part"


class FilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel with atomic message files.

    kombu creates a message file under its final name and then writes it, so a consumer can take
    it while still empty, and a publisher killed in between (a worker's sweeper re-queueing a
    clip, say) leaves an empty file that stops every worker that reads it (JSONDecodeError).
    Here a message is written under a name consumers skip and renamed into place (atomic on one
    file system); a file that still cannot be read is logged and skipped, not fatal: its clip,
    if any, stays queued in SQL, and is sent again when a worker starts or its study's missing
    clips are queued.
    """

    # kombu's stubs give the filesystem channel and its base different signatures for _put.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"cannot add {final!r} to the queue: {exc}") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        while True:  # ends with a message or Empty
            try:
                return super()._get(queue)
            except ValueError as exc:  # the file is already removed: go on to the next one
                log.error("skipped an unreadable message file in queue %r: %s", queue, exc)


class FilesystemTransport(filesystem.Transport):
    """The embedded broker's transport: kombu's filesystem one with `FilesystemChannel`."""

    Channel = FilesystemChannel


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
    if url == FILESYSTEM_PREFIX:
        app.conf.broker_transport = f"{__name__}:FilesystemTransport"
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
