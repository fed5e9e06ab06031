"""Send render tasks to the broker, by name: the web app never imports torch or the tasks.

`queue_renders` is what the admin's form, the JSON route and the CLI share: mark the clips
queued, commit, then send one task per clip."""

from __future__ import annotations

import time
from collections.abc import Iterable

from celery import Celery
from sqlalchemy.orm import Session

from app.broker import RENDER_QUEUE, RENDER_TASK, make_celery
from app.clips import service as clips_service
from app.clips.service import QueueUnavailableError
from app.config import Settings
from app.studies.models import Study

_apps: dict[str, Celery] = {}


def _celery_for(settings: Settings) -> Celery:
    """One Celery app (and its connection pool) per broker URL."""
    if settings.broker_url not in _apps:
        _apps[settings.broker_url] = make_celery(settings)
    return _apps[settings.broker_url]


def send_renders(*, settings: Settings, clips: Iterable[tuple[int, bool]]) -> int:
    """Enqueue one render task per (clip id, tiny). Call only after the queueing commit."""
    celery = _celery_for(settings)
    keep_order = settings.broker_url.startswith("filesystem://")
    sent = 0
    try:
        for clip_id, tiny in clips:
            celery.send_task(
                RENDER_TASK,
                args=[clip_id],
                kwargs={"tiny": tiny},
                queue=RENDER_QUEUE,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5},
            )
            sent += 1
            if keep_order:
                _next_millisecond()
    except Exception as exc:  # kombu raises transport-specific errors; all mean "broker down"
        raise QueueUnavailableError(
            f"the render queue at {_safe(settings.broker_url)} is unavailable ({exc}); "
            f"{sent} task(s) were sent. The clips stay queued: render the missing clips again "
            "once the broker is back (the embedded broker also resends them when a worker starts)."
        ) from exc
    return sent


def queue_renders(
    *, session: Session, settings: Settings, study: Study, action: str, tiny: bool
) -> tuple[list[int], int]:
    """Queue the missing clips (`action="missing"`) or only the failed ones (`"retry_failed"`),
    commit, then send their tasks: (clip ids queued, tasks sent). Raises QueueUnavailableError
    when the broker is down; the clips stay queued in SQL (sending again is harmless)."""
    queue = clips_service.retry_failed if action == "retry_failed" else clips_service.queue_missing
    ids = queue(session=session, study=study, tiny=tiny)
    session.commit()
    try:
        return ids, send_renders(settings=settings, clips=[(i, tiny) for i in ids])
    except QueueUnavailableError as exc:
        exc.queued = len(ids)
        raise


def _next_millisecond() -> None:
    """Wait for the monotonic clock's next millisecond.

    kombu's filesystem transport names a message by that millisecond and a random uuid and
    hands messages out sorted by name: sends within one millisecond came out shuffled, so a
    later prompt's clip could render before the first pair was complete. At most 1 ms a task.
    """
    now = round(time.monotonic() * 1000)
    while round(time.monotonic() * 1000) <= now:
        time.sleep(0.0002)


def _safe(url: str) -> str:
    """The broker URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
