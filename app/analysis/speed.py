"""Speed beside preference: per-arm median render cost next to the arm's pooled win rate."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from app.analysis.schemas import ArmPreference, ArmSpeed, ClipTelemetry, SpeedPreference

_FIELDS = ("total_seconds", "denoise_seconds", "denoiser_passes", "peak_memory_bytes")


def _median(values: list[float]) -> float | None:
    vals = [v for v in values if math.isfinite(v)]  # None was skipped when collecting
    return float(np.median(vals)) if vals else None


def speed_summary(
    telemetry: Iterable[ClipTelemetry], *, arms: Sequence[str] | None = None
) -> tuple[ArmSpeed, ...]:
    """Median total seconds, denoise seconds, denoiser passes and peak memory per arm.

    Medians (not means): render times have long right tails (cold starts, contention). Missing
    figures (None / NaN) are skipped per field. `arms` fixes the order and includes arms without
    clips (all None); without it, arms appear in first-seen order.
    """
    by_arm: dict[str, dict[str, list[float]]] = {}
    for arm in arms or ():
        by_arm[arm] = {f: [] for f in _FIELDS}
    n_clips: dict[str, int] = dict.fromkeys(by_arm, 0)
    for t in telemetry:
        if arms is not None and t.arm not in by_arm:
            continue
        slot = by_arm.setdefault(t.arm, {f: [] for f in _FIELDS})
        n_clips[t.arm] = n_clips.get(t.arm, 0) + 1
        for f in _FIELDS:
            v = getattr(t, f)
            if v is not None:
                slot[f].append(float(v))
    return tuple(
        ArmSpeed(
            arm=arm,
            n_clips=n_clips.get(arm, 0),
            median_total_seconds=_median(vals["total_seconds"]),
            median_denoise_seconds=_median(vals["denoise_seconds"]),
            median_denoiser_passes=_median(vals["denoiser_passes"]),
            median_peak_memory_bytes=_median(vals["peak_memory_bytes"]),
        )
        for arm, vals in by_arm.items()
    )


def speed_vs_preference(
    speed: Sequence[ArmSpeed], preference: Sequence[ArmPreference], *, criterion: str
) -> tuple[SpeedPreference, ...]:
    """Join each arm's speed with its pooled win rate on `criterion` (e.g. overall quality).
    Arms missing on either side get an empty partner (no clips / no votes)."""
    prefs = {p.arm: p for p in preference if p.criterion == criterion}
    speeds = {s.arm: s for s in speed}
    arms = list(dict.fromkeys([*speeds, *prefs]))
    out = []
    for arm in arms:
        s = speeds.get(arm) or ArmSpeed(arm, 0, None, None, None, None)
        p = prefs.get(arm) or ArmPreference(criterion, arm, 0, 0, 0, 0, None, None, None)
        out.append(SpeedPreference(arm=arm, criterion=criterion, speed=s, preference=p))
    return tuple(out)


def unpriced_arms(speed: Iterable[ArmSpeed]) -> tuple[str, ...]:
    """Arms with no render seconds recorded (imported without cost columns, or not rendered)."""
    return tuple(s.arm for s in speed if s.median_total_seconds is None)


def fastest_arm(speed: Sequence[ArmSpeed]) -> str | None:
    """The arm with the lowest median render seconds, named only when every arm has a render
    cost: an arm without one could be the fastest, so None rather than a guess."""
    if not speed or unpriced_arms(speed):
        return None
    return min(speed, key=lambda s: (s.median_total_seconds, s.arm)).arm
