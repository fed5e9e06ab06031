"""The blinding audit's collection: every matchup of done clips, each clip as the media route
serves it in that matchup, and what an evaluator can observe of it without judging the pixels.

Per clip and side: the bytes served (padded to the matchup's size by `media.served`, the
function the media route calls), width and height, frame count, total duration (the sum of its
frame delays), the size of its global colour table, and the response time, measured here as the
time this process takes to read the clip from storage and pad it, to the millisecond (what the
media route does on a clip's first view; later views come from the process cache, and an
evaluator's network adds its own delay on top). A browser's own timing per clip is not
recorded: a trial's `client_load_seconds` covers both clips at once.

Each matchup is one unit, oriented as its first trial showed it (its first arm on the left or
not); a matchup no evaluator has seen yet gets a side from a coin seeded by its id, as an
assignment would. The statistics are app/analysis/blinding.py's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from app.analysis.blinding import DEFAULT_FOLDS, AuditUnit, BlindingAudit, audit
from app.clips.gif import gif_info
from app.clips.models import Clip, ClipStatus
from app.rating.media import served
from app.rating.models import Matchup, Trial
from app.storage import Storage
from app.studies.models import Prompt, Study

Clock = Callable[[], float]
# Response times are kept to the millisecond: the microseconds padding or reading a few KB more
# takes in-process vanish in any network's jitter, while a storage backend whose latency grows
# with an object's size (S3 reading megabytes) shows up in whole milliseconds.
RESPONSE_RESOLUTION = "1 ms"


@dataclass(frozen=True, slots=True)
class Observed:
    """A clip as an evaluator's browser sees it, before the padding of a matchup."""

    data: bytes
    size: int  # as stored (the padding is computed from both clips' stored sizes)
    width: int
    height: int
    frames: int
    duration_ms: int
    palette_size: int
    read_ms: float


def palette_size(data: bytes) -> int:
    """Entries in a GIF's global colour table, from its header (0 when it has none)."""
    if len(data) < 13 or data[:3] != b"GIF":
        return 0
    packed = data[10]
    return 2 ** ((packed & 0x07) + 1) if packed & 0x80 else 0


def observe(storage: Storage, key: str, *, clock: Clock = time.perf_counter) -> Observed:
    """Read one stored clip (timed) and what it shows without its pixels being judged."""
    started = clock()
    data = storage.read(key)
    read_ms = (clock() - started) * 1000
    try:
        info = gif_info(data)
    except ValueError:  # not a GIF: only its bytes and timing are observable
        info = {"width": 0, "height": 0, "frames": 0, "duration_ms": 0}
    return Observed(
        data=data,
        size=len(data),
        width=int(info["width"]),
        height=int(info["height"]),
        frames=int(info["frames"]),
        duration_ms=int(info["duration_ms"]),
        palette_size=palette_size(data),
        read_ms=read_ms,
    )


def collect(
    *,
    session: Session,
    study: Study,
    storage: Storage,
    padded: bool = True,
    clock: Clock = time.perf_counter,
) -> list[AuditUnit]:
    """One unit per matchup of two done clips: both sides' features as served (`padded=False`:
    as they would be without the padding, to measure what it hides)."""
    clip_a, clip_b = aliased(Clip), aliased(Clip)
    rows = session.execute(
        select(
            Matchup.id,
            Prompt.text,
            clip_a.storage_key,
            clip_b.storage_key,
            Matchup.arm_a_id,
            Matchup.arm_b_id,
        )
        .join(Prompt, Prompt.id == Matchup.prompt_id)
        .join(clip_a, clip_a.id == Matchup.clip_a_id)
        .join(clip_b, clip_b.id == Matchup.clip_b_id)
        .where(
            Matchup.study_id == study.id,
            clip_a.status == ClipStatus.done,
            clip_b.status == ClipStatus.done,
            clip_a.storage_key.is_not(None),
            clip_b.storage_key.is_not(None),
        )
        .order_by(Matchup.id)
    ).all()
    first_shown = _first_orientation(session, study)
    seen: dict[str, Observed] = {}

    def observed(key: str) -> Observed:
        if key not in seen:
            seen[key] = observe(storage, key, clock=clock)
        return seen[key]

    units = []
    for matchup_id, prompt, key_a, key_b, arm_a, arm_b in rows:
        a, b = observed(str(key_a)), observed(str(key_b))
        a_left = first_shown.get(matchup_id)
        if a_left is None:
            a_left = random.Random(matchup_id).random() < 0.5
        left, right = (a, b) if a_left else (b, a)
        units.append(
            AuditUnit(
                group=prompt,
                left=_features(left, right, padded=padded, clock=clock),
                right=_features(right, left, padded=padded, clock=clock),
                first_on_left=a_left,
                pair=f"{arm_a}-{arm_b}",
            )
        )
    return units


def _first_orientation(session: Session, study: Study) -> dict[int, bool]:
    """Matchup id -> whether its first shown trial had clip a on the left."""
    first = (
        select(Trial.matchup_id, func.min(Trial.id).label("trial_id"))
        .join(Matchup, Matchup.id == Trial.matchup_id)
        .where(Matchup.study_id == study.id, Trial.shown_at.is_not(None))
        .group_by(Trial.matchup_id)
        .subquery()
    )
    rows = session.execute(
        select(Trial.matchup_id, Trial.a_on_left).join(first, first.c.trial_id == Trial.id)
    )
    return {int(m): bool(a_on_left) for m, a_on_left in rows if m is not None}


def _features(clip: Observed, other: Observed, *, padded: bool, clock: Clock) -> dict[str, float]:
    started = clock()
    body = served(clip.data, size=clip.size, partner_size=other.size if padded else None)
    pad_ms = (clock() - started) * 1000
    return {
        "served_bytes": float(len(body)),
        "width": float(clip.width),
        "height": float(clip.height),
        "frames": float(clip.frames),
        "duration_ms": float(clip.duration_ms),
        "palette_size": float(clip.palette_size),
        "response_ms": float(round(clip.read_ms + pad_ms)),  # see RESPONSE_RESOLUTION
    }


def blinding_audit(
    *,
    session: Session,
    study: Study,
    storage: Storage,
    padded: bool = True,
    folds: int = DEFAULT_FOLDS,
    clock: Clock = time.perf_counter,
) -> BlindingAudit:
    """Collect the study's matchups as served and cross-validate the arm predicted from them."""
    units = collect(session=session, study=study, storage=storage, padded=padded, clock=clock)
    return audit(units, folds=folds)
