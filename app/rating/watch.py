"""Watch telemetry: what the rating page saw of a pair before its answer, made into loops.

The page reports, per trial, how long each side's clip was on screen with the tab visible and
how long the tab was hidden (`schemas.WatchIn`). A GIF in an `<img>` cannot report its loops, so
a clip's whole-loop equivalents are its visible time divided by its loop duration, which only
the server knows (the GIF's measured `duration_ms`, else its frames over its arm's fps): the
page is told no clip's duration, and nothing it sends or receives differs by arm. Stored with
the trial (loops_left, loops_right, watched_both, hidden_seconds); a study's `min_loops` flags
trials answered before both clips played that many loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.clips.models import Clip
from app.rating.errors import WatchError
from app.rating.schemas import WatchIn
from app.studies.models import Arm

# As for the client's timing: its clock may run this much faster than the server's, plus the
# timestamps' resolution.
CLOCK_DRIFT = 0.001
CLOCK_SLACK = 0.05
UNKNOWN: dict[str, Any] = {
    "loops_left": None,
    "loops_right": None,
    "watched_both": None,
    "hidden_seconds": None,
}


def loop_seconds(session: Session, clip_ids: Sequence[int]) -> list[float | None]:
    """Each clip's loop duration in seconds (None when unknown: no such clip, or neither its
    measured duration nor its frames and fps are known), in the order given."""
    rows = session.execute(
        select(Clip.id, Clip.duration_ms, Clip.num_frames, Arm.spec)
        .join(Arm, Arm.id == Clip.arm_id)
        .where(Clip.id.in_(list(clip_ids)))
    )
    found: dict[int, float | None] = {}
    for clip_id, duration_ms, frames, spec in rows:
        seconds = None
        if duration_ms:
            seconds = duration_ms / 1000
        elif frames and isinstance(spec, dict) and spec.get("fps"):
            seconds = frames / float(spec["fps"])
        found[clip_id] = seconds
    return [found.get(clip_id) for clip_id in clip_ids]


def check_watch(
    session: Session,
    *,
    watch: WatchIn | None,
    clips: tuple[int, int],
    elapsed: float,
    min_loops: float,
) -> tuple[dict[str, Any], list[str]]:
    """The trial's telemetry columns and the flag reasons `min_loops` gives them.

    `clips`: the clip ids on the left and right; `elapsed`: the server's seconds between the
    pair being shown and the answer arriving, which bounds what the page can have measured
    (a clip on screen is not hidden, so its time plus the hidden time fits in it). Raises
    WatchError for telemetry that cannot be right."""
    if watch is None:
        reasons = [f"watch: not reported (min_loops {min_loops:g})"] if min_loops else []
        return dict(UNKNOWN), reasons
    bound = elapsed * (1 + CLOCK_DRIFT) + CLOCK_SLACK
    for side, seconds in (("left", watch.left_seconds), ("right", watch.right_seconds)):
        if seconds + watch.hidden_seconds > bound:
            raise WatchError(
                f"The reported watch telemetry (the {side} clip on screen {seconds:.3f} s, the "
                f"tab hidden {watch.hidden_seconds:.3f} s) is longer than the {elapsed:.3f} s "
                "between the pair being shown and this answer arriving, so it cannot be right. "
                "Measure both on a monotonic clock from when the pair arrived as the current "
                "one. Nothing was stored."
            )
    durations = loop_seconds(session, clips)
    loops = [
        round(seconds / duration, 3) if duration else None
        for seconds, duration in zip(
            (watch.left_seconds, watch.right_seconds), durations, strict=True
        )
    ]
    known = [n for n in loops if n is not None]
    values = {
        "loops_left": loops[0],
        "loops_right": loops[1],
        "watched_both": min(known) >= 1 if len(known) == 2 else None,
        "hidden_seconds": round(watch.hidden_seconds, 3),
    }
    reasons = []
    if min_loops and len(known) == 2 and min(known) < min_loops:
        reasons.append(
            f"few loops: {loops[0]:.1f} left, {loops[1]:.1f} right whole loops on screen "
            f"(< min_loops {min_loops:g})"
        )
    return values, reasons
