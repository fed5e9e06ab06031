"""Dashboard use cases: keyword-only functions over a read session (callers own it).

* `change_token`: the cheap "did anything change?" query the event stream polls every second;
* `live`: the live dashboard (count-based statistics from the incremental tally, render cost,
  evaluator progress, votes over time), cached per filter set until the tally moves;
* `advanced`: the expensive statistics (prompt-cluster bootstrap, Krippendorff's alpha,
  evaluator quality, the clip measures beside the votes: `app.dashboard.confounds`) from every
  vote of the study, cached and recomputed at most every
  ADVANCED_TTL_SECONDS unless asked for;
* `load_vote_table`: the study's votes as an `analysis.VoteTable`, read in batches;
* `verdict_view`: the plan's anytime-valid verdicts, kept current as evaluators finish (each
  finished evaluator's votes are read once and added to the plan's sequences, so a refresh
  costs one small query unless someone finished).
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Integer, String, func, select, type_coerce
from sqlalchemy.orm import Session

from app.analysis import (
    ArmSpeed,
    ClipTelemetry,
    VoteTable,
    agreement,
    allocation,
    arm_pairs,
    bootstrap_summary,
    bradley_terry,
    default_plan,
    evaluator_quality,
    pairwise_summary,
    speed_summary,
    speed_vs_preference,
)
from app.analysis.plan import Plan
from app.analysis.schemas import Verdict
from app.analysis.speed import fastest_arm
from app.clips.models import Clip, ClipStatus
from app.dashboard.confounds import confound_view
from app.dashboard.schemas import (
    Advanced,
    Bucket,
    CriterionLabel,
    Dashboard,
    EvaluatorProgress,
    Filters,
    PlanChangeNote,
    Timeline,
    VerdictView,
)
from app.dashboard.tally import TallyCache, TallySnapshot, Units, finished_evaluators
from app.db import utcnow
from app.rating import service as rating_service
from app.rating import votes
from app.rating.models import Choice, Evaluator, Matchup, Trial, Vote
from app.studies import service as studies_service
from app.studies.models import Arm, Prompt, Study, StudyStatus

POLL_SECONDS = 1.0
ADVANCED_TTL_SECONDS = 60.0
N_BOOT = 1000
TIMELINE_MAX_BUCKETS = 48
_BUCKET_MINUTES = (1, 5, 15, 60, 180, 360, 1440, 10080)
_LOAD_BATCH = 50_000


CACHED_VIEWS = 64  # dashboards and robustness panels kept (per filter set and study)


_K = TypeVar("_K")
_V = TypeVar("_V")


class Recent(OrderedDict[_K, _V]):
    """A dict that forgets its least recently stored entries beyond `limit`."""

    def __init__(self, limit: int = CACHED_VIEWS) -> None:
        super().__init__()
        self.limit = limit

    def store(self, key: _K, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


@dataclass
class DashboardCache:
    """Per-process caches shared by every dashboard client of one app."""

    tallies: TallyCache = field(default_factory=TallyCache)
    # Keyed by study (and filters); a dashboard and the telemetry carry their fingerprint.
    dashboards: Recent[Any, tuple[Any, Dashboard]] = field(default_factory=Recent)
    advanced: Recent[Any, Advanced] = field(default_factory=Recent)
    telemetry: Recent[Any, tuple[Any, tuple[ClipTelemetry, ...]]] = field(default_factory=Recent)
    lock: threading.Lock = field(default_factory=threading.Lock)
    advanced_locks: dict[Any, threading.Lock] = field(default_factory=dict)
    units: Recent[Any, Units] = field(default_factory=Recent)
    units_locks: dict[Any, threading.Lock] = field(default_factory=dict)

    def advanced_lock(self, study: Study) -> threading.Lock:
        """One robustness computation per study at a time."""
        with self.lock:
            return self.advanced_locks.setdefault((study.id, study.created_at), threading.Lock())

    def units_lock(self, study: Study) -> threading.Lock:
        """One update of a study's verdicts at a time."""
        with self.lock:
            return self.units_locks.setdefault((study.id, study.created_at), threading.Lock())


# --- cheap queries ------------------------------------------------------------------------------


def change_token(*, session: Session, study: Study) -> tuple[Any, ...]:
    """Changes whenever a vote is written (to any study), an evaluator of this study joins or
    completes, or one of its clips finishes: three indexed queries, about a millisecond."""
    top = session.scalar(select(func.max(Vote.id))) or 0
    return (top, *_evaluator_counts(session, study), *_clip_fingerprint(session, study))


def _evaluator_counts(session: Session, study: Study) -> tuple[int, int]:
    joined, completed = session.execute(
        select(func.count(Evaluator.id), func.count(Evaluator.completed_at)).where(
            Evaluator.study_id == study.id
        )
    ).one()
    return int(joined), int(completed)


def _clip_fingerprint(session: Session, study: Study) -> tuple[int, str]:
    done, last = session.execute(
        select(func.count(Clip.id), func.max(Clip.finished_at))
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study.id, Clip.status == ClipStatus.done)
    ).one()
    return int(done), str(last)


def clip_telemetry(*, session: Session, study: Study) -> tuple[ClipTelemetry, ...]:
    """Render cost of every done clip of the study."""
    rows = session.execute(
        select(Arm.name, Clip.telemetry)
        .join(Arm, Arm.id == Clip.arm_id)
        .where(Arm.study_id == study.id, Clip.status == ClipStatus.done)
    )
    return tuple(_telemetry(arm, data or {}) for arm, data in rows)


def _telemetry(arm: str, data: dict[str, Any]) -> ClipTelemetry:
    def number(name: str) -> float | None:
        value = data.get(name)
        return float(value) if isinstance(value, int | float) else None

    return ClipTelemetry(
        arm=arm,
        total_seconds=number("total_s"),
        denoise_seconds=number("denoise_s"),
        denoiser_passes=number("denoiser_passes"),
        peak_memory_bytes=number("peak_memory_bytes"),
    )


# --- the live dashboard -------------------------------------------------------------------------


def live(*, session: Session, study: Study, filters: Filters, cache: DashboardCache) -> Dashboard:
    """The live dashboard, recomputed only when the study's votes, evaluators, clips, status or
    plan moved."""
    started = time.perf_counter()
    snapshot = cache.tallies.snapshot(session=session, study=study, **filters.tally_filters())
    evaluators = _evaluator_counts(session, study)
    clips = _clip_fingerprint(session, study)
    key = (study.id, study.created_at, filters)
    fingerprint = (snapshot.version, evaluators, clips, study.status, _plan_key(study))
    cached = cache.dashboards.get(key)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    telemetry = _cached_telemetry(session=session, study=study, cache=cache, fingerprint=clips)
    dashboard = compose(
        study=study,
        filters=filters,
        snapshot=snapshot,
        telemetry=telemetry,
        evaluators=evaluators,
        planned_trials=rating_service.planned_trials(session=session, study=study, gold=False),
        started=started,
        verdicts=verdict_view(
            session=session, study=study, telemetry=telemetry, snapshot=snapshot, cache=cache
        ),
    )
    with cache.lock:
        cache.dashboards.store(key, (fingerprint, dashboard))
    return dashboard


def _cached_telemetry(
    *, session: Session, study: Study, cache: DashboardCache, fingerprint: Any
) -> tuple[ClipTelemetry, ...]:
    key = (study.id, study.created_at)
    cached = cache.telemetry.get(key)
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, clip_telemetry(session=session, study=study))
        with cache.lock:
            cache.telemetry.store(key, cached)
    return cached[1]


def compose(
    *,
    study: Study,
    filters: Filters,
    snapshot: TallySnapshot,
    telemetry: Sequence[ClipTelemetry],
    evaluators: tuple[int, int],
    planned_trials: int,
    started: float,
    verdicts: VerdictView | None = None,
) -> Dashboard:
    """Every count-based statistic of the snapshot, with render cost and progress beside it."""
    arms = tuple(arm.name for arm in study.arms)
    criteria = tuple(study.criterion_keys)
    speed = speed_summary(telemetry, arms=arms)
    focus = focus_arm(filters.arm, arms=arms, speed=speed)
    margin = None if filters.margin is None else filters.margin / 100
    # Adaptive allocation gives the arm pairs unequal shares on purpose: pooled preferences
    # then weigh every opponent equally (design weights), as uniform allocation would.
    pair_weighted = studies_service.analysis_spec(study).adaptive
    summary = pairwise_summary(
        snapshot.counts,
        pairs=oriented_pairs(arms, focus),
        margin=margin,
        pair_weighted=pair_weighted,
    )
    speed_criterion = filters.criterion if filters.criterion in criteria else _main(criteria)
    return Dashboard(
        slug=study.slug,
        name=study.name,
        arms=arms,
        criteria=tuple(CriterionLabel(c.key, c.label) for c in study.criterion_list),
        filters=filters,
        focus=focus,
        summary=summary,
        strengths=bradley_terry(snapshot.counts) if len(arms) > 2 else (),
        speed=speed_vs_preference(speed, summary.arm_preference, criterion=speed_criterion),
        speed_criterion=speed_criterion,
        progress=_progress(snapshot, evaluators=evaluators, planned=planned_trials),
        timeline=timeline(snapshot.minutes, votes_per_trial=len(criteria)),
        version=snapshot.version,
        generated_at=utcnow(),
        compute_ms=(time.perf_counter() - started) * 1000,
        verdicts=verdicts,
        pair_weighted=pair_weighted,
    )


def _main(criteria: Sequence[str]) -> str:
    return "overall_quality" if "overall_quality" in criteria else criteria[-1]


def focus_arm(requested: str | None, *, arms: Sequence[str], speed: Sequence[ArmSpeed]) -> str:
    """The requested arm, else the fastest when every arm has a render cost, else the first
    (the dashboard then says which arms have no cost rather than guessing)."""
    if requested in arms:
        return str(requested)
    return fastest_arm(speed) or arms[0]


def oriented_pairs(arms: Sequence[str], focus: str) -> list[tuple[str, str]]:
    """Every arm pair, the focus arm first where it takes part."""
    return [(b, a) if b == focus else (a, b) for a, b in arm_pairs(arms)]


def _progress(
    snapshot: TallySnapshot, *, evaluators: tuple[int, int], planned: int
) -> EvaluatorProgress:
    answered = [a for a, _ in snapshot.evaluator_trials.values() if a > 0]
    joined, completed = evaluators
    return EvaluatorProgress(
        joined=joined,
        started=len(answered),
        completed=completed,
        flagged=len(snapshot.flagged_evaluators),
        planned_trials=planned,
        answered_trials=sum(answered),
        median_answered=statistics.median(answered) if answered else None,
        histogram=_histogram(answered, not_started=max(joined - len(answered), 0), top=planned),
    )


def _histogram(answered: list[int], *, not_started: int, top: int) -> tuple[tuple[str, int], ...]:
    """Evaluators by trials answered: none, four ranges up to `top`, and `top` or more."""
    top = max(top, max(answered, default=0), 1)
    edges = sorted({1, *(max(1, math.ceil(top * q / 4)) for q in (1, 2, 3)), top})
    ordered = sorted(answered)
    bins: list[tuple[str, int]] = [("0", not_started)]
    for low, high in pairwise(edges):
        label = f"{low}" if high - 1 == low else f"{low}\N{EN DASH}{high - 1}"
        bins.append((label, bisect_left(ordered, high) - bisect_left(ordered, low)))
    bins.append((f"{top}+", len(ordered) - bisect_left(ordered, top)))
    return tuple(bins)


def timeline(minutes: dict[str, int], *, votes_per_trial: int) -> Timeline:
    """Answered trials per minute regrouped into at most TIMELINE_MAX_BUCKETS buckets."""
    if not minutes:
        return Timeline(buckets=(), bucket_minutes=60)
    first, last = (datetime.fromisoformat(k) for k in (min(minutes), max(minutes)))
    span = (last - first).total_seconds() / 60 + 1
    size = next((m for m in _BUCKET_MINUTES if span / m <= TIMELINE_MAX_BUCKETS), 10080)
    origin = _floor(first, size)
    counts = [0] * (int((last - origin).total_seconds() // 60 // size) + 1)
    for key, n in _coarse(minutes, size).items():
        counts[int((datetime.fromisoformat(key) - origin).total_seconds() // 60 // size)] += n
    buckets, total = [], 0
    for i, trials in enumerate(counts):
        total += trials * votes_per_trial
        start = origin + timedelta(minutes=i * size)
        buckets.append(Bucket(start, trials, trials * votes_per_trial, total))
    return Timeline(buckets=tuple(buckets), bucket_minutes=size)


def _coarse(minutes: dict[str, int], size: int) -> Counter[str]:
    """Minute keys merged into hour or day keys when the buckets are that coarse (cheap string
    slicing, so only a few keys are parsed as dates)."""
    width = 10 if size % 1440 == 0 else 13 if size % 60 == 0 else 16
    pad = {10: "T00:00", 13: ":00", 16: ""}[width]
    out: Counter[str] = Counter()
    for key, n in minutes.items():
        out[key[:width] + pad] += n
    return out


def _floor(stamp: datetime, minutes: int) -> datetime:
    day = stamp.replace(hour=0, minute=0)
    if minutes >= 10080:
        return day - timedelta(days=day.weekday())
    offset = (stamp - day).total_seconds() // 60
    return day + timedelta(minutes=offset - offset % minutes)


def full(*, session: Session, study: Study, filters: Filters) -> tuple[Dashboard, Advanced]:
    """Everything, computed now (no cache): for exports, the report and the command line."""
    cache = DashboardCache()
    return (
        live(session=session, study=study, filters=filters, cache=cache),
        advanced(session=session, study=study, filters=filters, cache=cache),
    )


# --- the verdicts -------------------------------------------------------------------------------


def _plan_key(study: Study) -> str:
    """The stored plan, as a cache key (a change of plan recomputes the verdicts)."""
    return json.dumps(study.analysis or {}, sort_keys=True, default=str)


def study_plan(study: Study, *, fastest: str | None) -> tuple[Plan, str | None]:
    """The study's plan (its focus arm, else `fastest`, else the first arm), and a note when a
    stored plan no longer fits the study and the default plan stands in."""
    try:
        return studies_service.analysis_plan(study, focus=fastest), None
    except ValueError as error:
        arms = [arm.name for arm in study.arms]
        plan = default_plan(criteria=study.criterion_keys, arms=arms, focus=fastest or arms[0])
        return (
            plan,
            f"The stored analysis plan no longer fits the study ({error}): "
            "the default plan stands in.",
        )


def verdict_view(
    *,
    session: Session,
    study: Study,
    telemetry: Sequence[ClipTelemetry],
    snapshot: TallySnapshot,
    cache: DashboardCache,
) -> VerdictView:
    """The plan's verdicts now: one small query when nobody finished since the last call, the
    new evaluators' votes (read once) added to the sequences when someone did. The page's
    filters play no part (see `VerdictView`)."""
    arms = tuple(arm.name for arm in study.arms)
    plan, note = study_plan(study, fastest=fastest_arm(speed_summary(telemetry, arms=arms)))
    key = (study.id, study.created_at)
    with cache.units_lock(study):
        finished = finished_evaluators(session, study)
        units = cache.units.get(key)
        if units is None or units.arms != arms or not units.continues(finished):
            units = Units(arms, tuple(study.criterion_keys))
        units.add(session, study, finished)
        summary = units.monitor(plan).summary()
        with cache.lock:
            cache.units.store(key, units)
        counted = {e for _, e in units.finished}
    view = studies_service.plan_view(session=session, study=study)
    waiting = sum(
        1 for e, (answered, _) in snapshot.evaluator_trials.items() if answered and e not in counted
    )
    return VerdictView(
        plan=plan,
        summary=summary,
        waiting=waiting,
        closed=study.status == StudyStatus.closed,
        locked_at=view.locked_at,
        changes=tuple(PlanChangeNote(c.changed_at, c.reason, tuple(c.lines)) for c in view.changes),
        note=note,
        wanted=_wanted(plan, summary.verdicts),
        best=tuple(
            (c, allocation.best_arm(plan, summary.verdicts, criterion=c))
            for c in dict.fromkeys(h.criterion for h in plan.primary)
        )
        if plan.compare == "best"
        else (),
    )


def _wanted(plan: Plan, verdicts: Sequence[Verdict]) -> tuple[tuple[str, str], ...] | None:
    if not plan.adaptive:
        return None
    pairs = allocation.wanted_pairs(plan, verdicts)
    if pairs is None:
        return None
    order = {arm: i for i, arm in enumerate(allocation.arms_of(plan))}
    ordered: list[tuple[str, str]] = []
    for pair in pairs:
        first, second = sorted(pair, key=order.__getitem__)
        ordered.append((first, second))
    return tuple(sorted(ordered, key=lambda p: (order[p[0]], order[p[1]])))


# --- the expensive statistics -------------------------------------------------------------------


def advanced(
    *,
    session: Session,
    study: Study,
    filters: Filters,
    cache: DashboardCache,
    fresh: bool = False,
) -> Advanced:
    """Bootstrap, agreement and evaluator quality: served from the cache when nothing changed
    or it is younger than ADVANCED_TTL_SECONDS (unless `fresh`), computed once at a time."""
    snapshot = cache.tallies.snapshot(session=session, study=study, **filters.tally_filters())
    key = (study.id, study.created_at, filters)
    with cache.advanced_lock(study):
        cached = cache.advanced.get(key)
        if cached is not None and _usable(cached, snapshot.version, fresh=fresh):
            return cached
        telemetry = _cached_telemetry(
            session=session, study=study, cache=cache, fingerprint=_clip_fingerprint(session, study)
        )
        result = compute_advanced(
            session=session,
            study=study,
            filters=filters,
            telemetry=telemetry,
            flagged_evaluators=snapshot.flagged_evaluators,
            version=snapshot.version,
        )
        with cache.lock:
            cache.advanced.store(key, result)
        return result


def _usable(cached: Advanced, version: int, *, fresh: bool) -> bool:
    if cached.version == version:
        return True
    age = (utcnow() - cached.computed_at).total_seconds()
    return not fresh and age < ADVANCED_TTL_SECONDS


def compute_advanced(
    *,
    session: Session,
    study: Study,
    filters: Filters,
    telemetry: Sequence[ClipTelemetry],
    flagged_evaluators: Iterable[int],
    version: int = 0,
) -> Advanced:
    started = time.perf_counter()
    arms = tuple(arm.name for arm in study.arms)
    focus = focus_arm(filters.arm, arms=arms, speed=speed_summary(telemetry, arms=arms))
    table = load_vote_table(session=session, study=study, exclude_ties=filters.exclude_ties)
    # filter once, here: every statistic below sees only the votes the filters keep
    table = table.where(
        table.mask(
            include_repeats=True,
            exclude_flagged=filters.exclude_flagged_trials,
            exclude_evaluators=set(flagged_evaluators)
            if filters.exclude_flagged_evaluators
            else (),
        )
    )
    bootstrap = bootstrap_summary(table, n_boot=N_BOOT, seed=0, pairs=oriented_pairs(arms, focus))
    # the clip measures beside the same votes: the focus arm against each opponent
    confounds = confound_view(
        session=session,
        study=study,
        pairs=[p for p in oriented_pairs(arms, focus) if p[0] == focus],
        exclude_flagged_trials=filters.exclude_flagged_trials,
        exclude_evaluators=set(flagged_evaluators) if filters.exclude_flagged_evaluators else (),
    )
    return Advanced(
        bootstrap=bootstrap,
        agreement=agreement(table),
        evaluators=evaluator_quality(table),
        n_votes=len(table),
        version=version,
        computed_at=utcnow(),
        compute_s=time.perf_counter() - started,
        confounds=confounds,
    )


def load_vote_table(*, session: Session, study: Study, exclude_ties: bool = False) -> VoteTable:
    """Every vote of the study as integer-coded columns, read `_LOAD_BATCH` rows at a time
    through Core (plain ints and strings: no per-row ORM or type conversion); the join, the
    study filter and the sides come from `app.rating.votes`."""
    columns = {
        "prompt": Matchup.prompt_id,
        "evaluator": Trial.evaluator_id,
        "trial": Trial.id,
        "matchup": Matchup.id,
        "left_arm": votes.left_arm_id,
        "right_arm": votes.right_arm_id,
        "flagged": type_coerce(Trial.flagged, Integer),
        "repeat": type_coerce(Trial.is_repeat, Integer),
        "criterion": Vote.criterion,
        "choice": type_coerce(Vote.choice, String),
    }
    dialect = session.get_bind().dialect.name
    query = votes.study_votes(*columns.values(), study_id=study.id, dialect=dialect)
    if exclude_ties:
        query = query.where(Vote.choice != Choice.tie.value)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in columns}
    labels: dict[str, dict[str, int]] = {"criterion": {}, "choice": {}}
    result = session.connection().execution_options(yield_per=_LOAD_BATCH).execute(query)
    for rows in result.partitions():
        for name, values in zip(columns, zip(*rows, strict=True), strict=True):
            parts[name].append(_codes(values, labels.get(name)))
    prompts = session.execute(
        select(Prompt.id, Prompt.theme, Prompt.text).where(Prompt.study_id == study.id)
    ).all()
    return _vote_table(parts, labels, prompts=prompts, study=study)


def _codes(values: Sequence[Any], labels: dict[str, int] | None) -> np.ndarray:
    """Integers as they are; strings as codes into `labels` (extended as new ones appear)."""
    if labels is None:
        return np.fromiter(values, dtype=np.int64, count=len(values))
    codes = [labels.setdefault(v, len(labels)) for v in values]
    return np.fromiter(codes, dtype=np.int64, count=len(codes))


def _vote_table(
    parts: dict[str, list[np.ndarray]],
    labels: dict[str, dict[str, int]],
    *,
    prompts: Sequence[tuple[int, str, str]],
    study: Study,
) -> VoteTable:
    """Prompts are coded by the rank of their text (unique in a study), not by id: the
    bootstrap draws prompts in code order, so its intervals then do not depend on the order in
    which the study file lists them."""
    cols = {
        name: np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        for name, arrays in parts.items()
    }
    arm_index = {arm.id: i for i, arm in enumerate(study.arms)}
    arm_of = np.zeros(max(arm_index, default=0) + 1, dtype=np.int64)
    for arm_id, i in arm_index.items():
        arm_of[arm_id] = i
    arm_names = np.array([arm.name for arm in study.arms], dtype=object)
    by_id = sorted(prompts)
    theme_of = np.array([theme for _, theme, _ in by_id] or [""], dtype=object)
    text_rank = np.argsort(np.argsort([text for _, _, text in by_id], kind="stable"))
    prompt_code = np.searchsorted(
        np.array([p for p, _, _ in by_id], dtype=np.int64), cols["prompt"]
    )

    def strings(name: str) -> np.ndarray:
        return np.array(list(labels[name]) or [""], dtype=object)[cols[name]]

    return VoteTable.from_columns(
        prompt_id=text_rank[prompt_code] if len(prompt_code) else cols["prompt"],
        theme=theme_of[prompt_code] if len(prompt_code) else np.zeros(0, dtype=object),
        evaluator=cols["evaluator"],
        criterion=strings("criterion"),
        left_arm=arm_names[arm_of[cols["left_arm"]]],
        right_arm=arm_names[arm_of[cols["right_arm"]]],
        choice=strings("choice"),
        flagged=cols["flagged"].astype(bool),
        trial_id=cols["trial"],
        is_repeat=cols["repeat"].astype(bool),
        matchup_id=cols["matchup"],
        arms=[arm.name for arm in study.arms],
        criteria=study.criterion_keys,
    )
