"""Render batches and clip state. The web app and CLI queue work here; workers report back here.

Every state change is a conditional UPDATE on the clip row, so a clip is claimed by one worker at
a time and becomes `done` exactly once, whatever the broker delivers twice or loses.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Update, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.clips.measures import NAMES, VERSIONS, Measured, measure_gif
from app.clips.models import Clip, ClipMeasure, ClipStatus
from app.db import utcnow
from app.storage import Storage, StorageError
from app.studies.models import Arm, Prompt, Study, StudyStatus

ACTIVE = (ClipStatus.queued, ClipStatus.rendering)
# What "render the missing clips" picks up: never rendered, failed or cancelled before, and
# queued ones, whose message may have been lost (broker down when they were sent, or a dead
# worker on the at-most-once embedded broker). Resending is harmless: a task only renders a
# clip it can claim.
MISSING = (ClipStatus.pending, ClipStatus.failed, ClipStatus.cancelled, ClipStatus.queued)


class QueueUnavailableError(RuntimeError):
    """The broker cannot take render tasks right now (e.g. Redis is down)."""

    queued = 0  # clips marked queued in SQL whose tasks may not have been sent


def _matched(session: Session, statement: Update) -> int:
    """The rows an UPDATE matched. Session.execute returns a CursorResult for one, but is typed
    to return a plain Result, which has no rowcount."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def _study_clips(study: Study) -> Any:
    return (
        select(Clip.id).join(Prompt, Prompt.id == Clip.prompt_id).where(Prompt.study_id == study.id)
    )


def queue_missing(
    *, session: Session, study: Study, tiny: bool, statuses: tuple[ClipStatus, ...] = MISSING
) -> list[int]:
    """Mark every missing clip queued; returns their ids in prompt order, arms interleaved.

    Interleaving (prompt 1 arm A, prompt 1 arm B, prompt 2 ...) makes the first pairs ratable
    early. A draft study with clips to render moves to `rendering`; an open or closed one keeps
    its status. The caller sends the tasks only after committing (see `dispatch`).
    """
    ids = list(
        session.scalars(
            select(Clip.id)
            .join(Prompt, Prompt.id == Clip.prompt_id)
            .join(Arm, Arm.id == Clip.arm_id)
            .where(Prompt.study_id == study.id, Clip.status.in_(statuses))
            .order_by(Prompt.position, Arm.position)
        )
    )
    if ids:
        session.execute(
            update(Clip)
            .where(Clip.id.in_(ids))
            .values(
                status=ClipStatus.queued,
                tiny=tiny,
                queued_at=utcnow(),
                error=None,
                progress_step=0,
                progress_total=0,
                task_id=None,
                worker=None,
                lease_expires_at=None,
            )
        )
        _draft_to_rendering(session=session, study=study)
    return ids


def _draft_to_rendering(*, session: Session, study: Study) -> None:
    # A conditional UPDATE: an open or closed study, even one opened by a concurrent request,
    # never goes back.
    session.execute(
        update(Study)
        .where(Study.id == study.id, Study.status == StudyStatus.draft)
        .values(status=StudyStatus.rendering)
    )


def retry_failed(*, session: Session, study: Study, tiny: bool) -> list[int]:
    return queue_missing(session=session, study=study, tiny=tiny, statuses=(ClipStatus.failed,))


def cancel(*, session: Session, study: Study) -> int:
    """Cancel queued and rendering clips; a rendering worker stops at its next step."""
    cancelled = _matched(
        session,
        update(Clip)
        .where(Clip.id.in_(_study_clips(study)), Clip.status.in_(ACTIVE))
        .values(status=ClipStatus.cancelled, lease_expires_at=None, finished_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    return cancelled or 0


# --- the worker side ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClipJob:
    """What a worker needs to render one clip, read in the claiming transaction."""

    clip_id: int
    study_id: int
    arm_spec: dict[str, Any]
    prompt: str
    seed: int
    tiny: bool
    attempts: int


def claim(
    *, session: Session, clip_id: int, task_id: str, worker: str, lease_s: int
) -> ClipJob | None:
    """Take a queued clip (or one whose lease expired) for this task; None when not ours to do."""
    now = utcnow()
    claimed = _matched(
        session,
        update(Clip)
        .where(
            Clip.id == clip_id,
            (Clip.status == ClipStatus.queued)
            | ((Clip.status == ClipStatus.rendering) & (Clip.lease_expires_at < now)),
        )
        .values(
            status=ClipStatus.rendering,
            task_id=task_id,
            worker=worker,
            attempts=Clip.attempts + 1,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_s),
            progress_step=0,
            error=None,
        )
        .execution_options(synchronize_session=False),
    )
    if not claimed:
        return None
    clip, prompt, arm = session.execute(
        select(Clip, Prompt, Arm)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .join(Arm, Arm.id == Clip.arm_id)
        .where(Clip.id == clip_id)
    ).one()
    return ClipJob(
        clip_id=clip.id,
        study_id=prompt.study_id,
        arm_spec=dict(arm.spec),
        prompt=prompt.text,
        seed=prompt.seed,
        tiny=clip.tiny,
        attempts=clip.attempts,
    )


def claim_batch(
    *, session: Session, job: ClipJob, task_id: str, worker: str, lease_s: int, limit: int
) -> list[ClipJob]:
    """Also claim up to `limit` more queued clips of `job`'s arm (tiny alike), in prompt order,
    for the same task, which renders them in one denoising call. Each is claimed as `claim` does
    (their own tasks will find them taken and skip them)."""
    if limit <= 0:
        return []
    arm_id = select(Clip.arm_id).where(Clip.id == job.clip_id).scalar_subquery()
    candidates = session.scalars(
        select(Clip.id)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(
            Clip.arm_id == arm_id,
            Clip.status == ClipStatus.queued,
            Clip.tiny == job.tiny,
            Clip.id != job.clip_id,
        )
        .order_by(Prompt.position, Clip.id)
        .limit(limit)
    ).all()
    claimed = (
        claim(session=session, clip_id=clip_id, task_id=task_id, worker=worker, lease_s=lease_s)
        for clip_id in candidates
    )
    return [more for more in claimed if more is not None]


def _update_if_ours(*, session: Session, clip_id: int, task_id: str, **values: Any) -> bool:
    """Change a rendering clip only while this task holds it; False once it is not ours
    (cancelled, or taken over after the lease lapsed)."""
    return bool(
        _matched(
            session,
            update(Clip)
            .where(Clip.id == clip_id, Clip.task_id == task_id, Clip.status == ClipStatus.rendering)
            .values(**values)
            .execution_options(synchronize_session=False),
        )
    )


def report_progress(
    *, session: Session, clip_id: int, task_id: str, step: int, total: int, lease_s: int
) -> bool:
    """Record a step and renew the lease; False tells the worker to stop."""
    return _update_if_ours(
        session=session,
        clip_id=clip_id,
        task_id=task_id,
        progress_step=step,
        progress_total=total,
        lease_expires_at=utcnow() + timedelta(seconds=lease_s),
    )


def renew_lease(*, session: Session, clip_id: int, task_id: str, lease_s: int) -> bool:
    """Extend the lease while the worker lives (loading weights has no steps to report)."""
    return _update_if_ours(
        session=session,
        clip_id=clip_id,
        task_id=task_id,
        lease_expires_at=utcnow() + timedelta(seconds=lease_s),
    )


def finish(
    *,
    session: Session,
    clip_id: int,
    task_id: str,
    storage_key: str,
    sha256: str,
    size_bytes: int,
    num_frames: int,
    width: int,
    height: int,
    duration_ms: int,
    telemetry: dict[str, Any],
) -> bool:
    """Mark the clip done with its media. Only the lease holder can: done happens once."""
    return _update_if_ours(
        session=session,
        clip_id=clip_id,
        task_id=task_id,
        status=ClipStatus.done,
        storage_key=storage_key,
        sha256=sha256,
        size_bytes=size_bytes,
        num_frames=num_frames,
        width=width,
        height=height,
        duration_ms=duration_ms,
        telemetry=telemetry,
        progress_step=telemetry.get("steps", 0),
        finished_at=utcnow(),
        lease_expires_at=None,
        error=None,
    )


def fail(
    *, session: Session, clip_id: int, task_id: str, error: str, requeue: bool = False
) -> bool:
    """Record an error: `failed` for good, or back to `queued` when a retry is coming."""
    return _update_if_ours(
        session=session,
        clip_id=clip_id,
        task_id=task_id,
        status=ClipStatus.queued if requeue else ClipStatus.failed,
        error=error[:4000],
        lease_expires_at=None,
        finished_at=None if requeue else utcnow(),
    )


def expire_leases(*, session: Session, now: datetime | None = None) -> list[tuple[int, bool]]:
    """Re-queue clips whose worker stopped renewing its lease; returns (clip id, tiny) to resend."""
    now = now or utcnow()
    stale = list(
        session.execute(
            select(Clip.id, Clip.tiny).where(
                Clip.status == ClipStatus.rendering, Clip.lease_expires_at < now
            )
        ).tuples()
    )
    if stale:
        session.execute(
            update(Clip)
            .where(
                Clip.id.in_([cid for cid, _ in stale]),
                Clip.status == ClipStatus.rendering,
                Clip.lease_expires_at < now,
            )
            .values(status=ClipStatus.queued, queued_at=now, task_id=None, worker=None)
            .execution_options(synchronize_session=False)
        )
    return stale


def queued_clips(*, session: Session) -> list[tuple[int, bool]]:
    """Every queued clip (id, tiny): resent when an at-most-once broker restarts."""
    return list(
        session.execute(
            select(Clip.id, Clip.tiny).where(Clip.status == ClipStatus.queued).order_by(Clip.id)
        ).tuples()
    )


# --- progress ---------------------------------------------------------------------------------


@dataclass
class ArmProgress:
    arm: str
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    rendering: list[dict[str, Any]] = field(default_factory=list)
    median_seconds: float | None = None
    eta_seconds: float | None = None

    @property
    def done(self) -> int:
        return self.counts.get(ClipStatus.done.value, 0)


def progress(*, session: Session, study: Study) -> list[ArmProgress]:
    """Per arm: clips by status, what is rendering now (step/total), median seconds, ETA."""
    arms = {a.id: ArmProgress(arm=a.name) for a in study.arms}
    rows = session.execute(
        select(Clip.arm_id, Clip.status, func.count(Clip.id))
        .where(Clip.id.in_(_study_clips(study)))
        .group_by(Clip.arm_id, Clip.status)
    ).all()
    for arm_id, status, n in rows:
        arms[arm_id].counts[status.value] = n
        arms[arm_id].total += n
    live = session.execute(
        select(Clip.arm_id, Clip.id, Clip.progress_step, Clip.progress_total, Clip.worker).where(
            Clip.id.in_(_study_clips(study)), Clip.status == ClipStatus.rendering
        )
    ).all()
    for arm_id, clip_id, step, total, worker in live:
        arms[arm_id].rendering.append(
            {"clip": clip_id, "step": step, "total": total, "worker": worker}
        )
    for arm_id, arm in arms.items():
        arm.median_seconds = _median_seconds(session, study, arm_id)
        remaining = arm.counts.get("queued", 0) + arm.counts.get("rendering", 0)
        if arm.median_seconds is not None and remaining:
            workers = max(1, len({r["worker"] for a in arms.values() for r in a.rendering}))
            arm.eta_seconds = arm.median_seconds * remaining / workers
    return list(arms.values())


def _median_seconds(session: Session, study: Study, arm_id: int) -> float | None:
    telemetry = session.scalars(
        select(Clip.telemetry)
        .where(
            Clip.id.in_(_study_clips(study)), Clip.arm_id == arm_id, Clip.status == ClipStatus.done
        )
        .order_by(Clip.finished_at.desc())
        .limit(50)
    ).all()
    seconds = [t["total_s"] for t in telemetry if isinstance(t, dict) and "total_s" in t]
    return statistics.median(seconds) if seconds else None


def recent_errors(*, session: Session, study: Study, limit: int = 20) -> list[dict[str, Any]]:
    """The latest failed clips with their error, for the admin render panel."""
    rows = session.execute(
        select(Clip.id, Arm.name, Prompt.position, Clip.error)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .join(Arm, Arm.id == Clip.arm_id)
        .where(Prompt.study_id == study.id, Clip.status == ClipStatus.failed)
        .order_by(Clip.finished_at.desc())
        .limit(limit)
    ).all()
    return [
        {"id": cid, "arm_name": arm, "prompt_position": position, "error": error}
        for cid, arm, position, error in rows
    ]


def arm_kind_of(engine: Engine, clip_id: int) -> str:
    """The pipeline kind of a clip's arm, for render metric labels ("unknown" on any error)."""
    try:
        with Session(engine.execution_options(sqlite_begin="DEFERRED")) as session:
            arm = session.scalar(
                select(Arm).join(Clip, Clip.arm_id == Arm.id).where(Clip.id == clip_id)
            )
            return arm.kind if arm is not None else "unknown"
    except Exception:
        return "unknown"


# --- measures ---------------------------------------------------------------------------------


def record_measures(*, session: Session, clip_id: int, measures: Mapping[str, Measured]) -> None:
    """Store a clip's measures (app/clips/measures.py), replacing any of the same name: an
    upsert on (clip_id, name), so measuring twice, or concurrently, leaves one row per name."""
    if not measures:
        return
    now = utcnow()
    rows = [
        {
            "clip_id": clip_id,
            "name": name,
            "value": m.value,
            "version": m.version,
            "measured_at": now,
        }
        for name, m in measures.items()
    ]
    dialect = session.get_bind().dialect.name
    keys = [ClipMeasure.clip_id, ClipMeasure.name]
    if dialect == "postgresql":
        pg = postgresql.insert(ClipMeasure).values(rows)
        session.execute(pg.on_conflict_do_update(index_elements=keys, set_=_new(pg.excluded)))
    elif dialect == "sqlite":
        lite = sqlite.insert(ClipMeasure).values(rows)
        session.execute(lite.on_conflict_do_update(index_elements=keys, set_=_new(lite.excluded)))
    else:
        raise NotImplementedError(f"record_measures: no upsert for the {dialect} dialect")


def _new(excluded: Any) -> dict[str, Any]:
    return {
        "value": excluded.value,
        "version": excluded.version,
        "measured_at": excluded.measured_at,
    }


def measures_for_study(*, session: Session, study_id: int) -> dict[int, dict[str, float]]:
    """{clip id: {measure name: value}} for the study's done clips (None values left out; a
    done clip without any measure is absent)."""
    out: dict[int, dict[str, float]] = {}
    rows = session.execute(
        select(ClipMeasure.clip_id, ClipMeasure.name, ClipMeasure.value)
        .join(Clip, Clip.id == ClipMeasure.clip_id)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(
            Prompt.study_id == study_id,
            Clip.status == ClipStatus.done,
            ClipMeasure.value.is_not(None),
        )
        .order_by(ClipMeasure.clip_id, ClipMeasure.name)
    )
    for clip_id, name, value in rows:
        if value is not None:
            out.setdefault(clip_id, {})[name] = value
    return out


def clip_measures(*, session: Session, study_id: int) -> dict[int, dict[str, Measured]]:
    """{clip id: {measure name: Measured(value, version)}} for the study's clips with measures
    (any status, None values kept), names in the order of `measure_names`."""
    out: dict[int, dict[str, Measured]] = {}
    rows = session.execute(
        select(ClipMeasure.clip_id, ClipMeasure.name, ClipMeasure.value, ClipMeasure.version)
        .join(Clip, Clip.id == ClipMeasure.clip_id)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study_id)
        .order_by(ClipMeasure.clip_id)
    )
    for clip_id, name, value, version in rows:
        out.setdefault(clip_id, {})[name] = Measured(value, version)
    return {clip_id: dict(sorted(m.items(), key=_name_order)) for clip_id, m in out.items()}


def measure_names(measures: Mapping[int, Mapping[str, object]]) -> list[str]:
    """Every measure name found, in the order of app/clips/measures.py's NAMES, then others
    (e.g. text_similarity) alphabetically."""
    names = {name for by_name in measures.values() for name in by_name}
    return sorted(names, key=lambda name: _name_order((name, None)))


def _name_order(item: tuple[str, object]) -> tuple[int, str]:
    name = item[0]
    return (NAMES.index(name) if name in NAMES else len(NAMES), name)


def measure_versions(*, session: Session, study_id: int) -> dict[int, dict[str, str]]:
    """{clip id: {measure name: version}} for the study's clips with measures (any status)."""
    return {
        clip_id: {name: m.version for name, m in by_name.items()}
        for clip_id, by_name in clip_measures(session=session, study_id=study_id).items()
    }


@dataclass(frozen=True)
class ToMeasure:
    clip_id: int
    storage_key: str
    # The rendered frame count of a rendered clip (the GIF may merge held frames), None for an
    # imported one: what the worker and the importer passed to measure_gif.
    num_frames: int | None


def clips_to_measure(
    *, session: Session, study: Study, versions: Mapping[str, str], force: bool = False
) -> list[ToMeasure]:
    """The study's done clips missing one of `versions`' measures or holding one of another
    version (every done clip with `force`), in id order."""
    done = session.execute(
        select(Clip.id, Clip.storage_key, Clip.num_frames, Clip.source)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study.id, Clip.status == ClipStatus.done)
        .order_by(Clip.id)
    ).all()
    have = {} if force else measure_versions(session=session, study_id=study.id)
    return [
        ToMeasure(clip_id, key, num_frames if source == "render" else None)
        for clip_id, key, num_frames, source in done
        if key is not None
        and (force or any(have.get(clip_id, {}).get(n) != v for n, v in versions.items()))
    ]


@dataclass
class Backfill:
    measured: int = 0
    to_measure: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # clip id: why


def backfill_measures(
    *,
    session: Session,
    study: Study,
    storage: Storage,
    force: bool = False,
    on_clip: Callable[[int, int], None] | None = None,
) -> Backfill:
    """Measure the study's done clips that lack a measure or hold an older version of one
    (every done clip with `force`), from their stored GIFs. Commits after each clip and
    measures outside any transaction, so a long backfill never holds SQLite's write lock and an
    interrupted one keeps what it did. `on_clip(done, total)` after each clip."""
    todo = clips_to_measure(session=session, study=study, versions=VERSIONS, force=force)
    session.commit()
    result = Backfill(to_measure=len(todo))
    for index, item in enumerate(todo, 1):
        try:
            measures = measure_gif(storage.read(item.storage_key), num_frames=item.num_frames)
        except (StorageError, ValueError) as exc:
            result.failed[item.clip_id] = f"{type(exc).__name__}: {exc}"
        else:
            record_measures(session=session, clip_id=item.clip_id, measures=measures)
            session.commit()
            result.measured += 1
        if on_clip is not None:
            on_clip(index, len(todo))
    return result
