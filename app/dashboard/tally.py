"""A study's vote tally, built once with SQL GROUP BY and then kept current from new votes only.

Why incremental: every vote must join its trial (side, flag, matchup), and that GROUP BY over a
million votes takes ~1.5 s on SQLite (measured, docs/benchmarks.md) - far too slow for a refresh
every second. A `Tally` is built once with GROUP BY queries (cold), then advanced by reading only
the votes above the last id it counted (`vote.id > settled`: a primary-key range, milliseconds).
Votes are never updated: a trial's votes, its `answered_at` and its flag are written in one
transaction, so adding each new vote once keeps the tally exact.

What it holds, per study:
* `cube`: first-showing votes (repeats excluded) by (criterion, theme, left arm, right arm,
  choice, trial flagged): `VoteCounts.from_grouped` rows once filters are applied;
* `excluded`: the part of `cube` cast by flagged evaluators (those with at least
  FLAGGED_EVALUATOR_SHARE of their answered trials flagged, and those whose gold accuracy is
  below the study's `gold_min_accuracy`: app/rating/gold.py, and straight-liners, whose answers
  on the first criterion fail app/analysis/quality.py's tests), so that filter is a subtraction;
* answered and flagged trials per evaluator, and answered trials per minute (repeats included).

`Units` keeps the verdicts' input the same way: each finished evaluator's first-showing vote
counts, read once when they finish (`finished_evaluators`), appended to the plan's sequences.

Gold trials (app/rating/gold.py) judge no matchup, so no query here reads their votes (every
one joins the matchup): they enter no count. Their answers only flag evaluators: each advance
counts the study's answered gold trials (one indexed query) and re-scores them when it changed.

Id order and commit order: SQLite serializes writers (BEGIN IMMEDIATE), so a reader never sees
vote n + 1 without vote n, and `settled` is simply the largest id read. PostgreSQL takes ids from
a sequence, and a transaction may commit after a later one: there, ids above `settled` are read
again until SETTLE_SECONDS after they were first visible (each vote counted once, by id), and a
cold build leaves its newest COLD_WINDOW_IDS ids to that path.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import String, case, false, func, select, type_coerce
from sqlalchemy.orm import Session, aliased

from app.analysis import Monitor, UnitCounts, VoteCounts
from app.analysis.plan import Plan
from app.analysis.quality import StraightLining, straight_lining
from app.dashboard.sqltext import minute_text
from app.rating import gold, votes
from app.rating.enrollment import rating_spec
from app.rating.models import Evaluator, GoldPair, Matchup, Trial, Vote
from app.studies.models import Arm, Prompt, Study, StudyStatus

FLAGGED_EVALUATOR_SHARE = 0.2
SETTLE_SECONDS = {"postgresql": 10.0}
COLD_WINDOW_IDS = {"postgresql": 50_000}
# Rebuild from scratch now and then (and when far behind): bounds the effect of anything written
# outside the rating flow, such as votes deleted by hand.
REBUILD_SECONDS = 900.0
REBUILD_GAP_IDS = 250_000
_IN_CHUNK = 500

# criterion, theme, left arm, right arm, choice, trial flagged
CubeKey = tuple[str, str, str, str, str, bool]


@dataclass(frozen=True, slots=True)
class TallySnapshot:
    """A consistent copy of what a summary needs (the tally keeps changing underneath)."""

    version: int
    counts: VoteCounts
    evaluator_trials: dict[int, tuple[int, int]]  # evaluator id -> (answered, flagged)
    minutes: dict[str, int]  # "YYYY-MM-DDTHH:MM" (UTC) -> answered trials
    flagged_evaluators: frozenset[int]


@dataclass(frozen=True, slots=True)
class _Matchup:
    arm_a: str
    arm_b: str
    theme: str


@dataclass(frozen=True, slots=True)
class _Counted:
    """A counted vote above `settled` (PostgreSQL's unsettled window)."""

    evaluator_id: int
    key: CubeKey | None  # None: a repeat (not in the cube)


def is_flagged(answered: int, flagged: int) -> bool:
    return answered > 0 and flagged >= FLAGGED_EVALUATOR_SHARE * answered


def _habits(sides: Counter[str]) -> tuple[int, int, int]:
    return sides["left"], sides["right"], sides["tie"]


def straight_liners(
    session: Session, *, study: Study, evaluator_ids: Sequence[int] | None = None
) -> dict[int, StraightLining]:
    """The straight-lining tests (app/analysis/quality.py) of the study's evaluators (or of
    `evaluator_ids`), on each answered trial's answer to the study's first criterion (gold
    trials, which judge no matchup, are not read)."""
    found: dict[int, Counter[str]] = {}
    choice = type_coerce(Vote.choice, String)
    query = (
        votes.study_votes(Trial.evaluator_id, choice, func.count(), study_id=study.id)
        .where(Vote.criterion == study.criterion_keys[0])
        .group_by(Trial.evaluator_id, choice)
    )
    chunks: list[Sequence[int] | None] = [None]
    if evaluator_ids is not None:
        ids = sorted(evaluator_ids)
        chunks = [ids[start : start + _IN_CHUNK] for start in range(0, len(ids), _IN_CHUNK)]
    for chunk in chunks:
        chunked = query if chunk is None else query.where(Trial.evaluator_id.in_(chunk))
        for evaluator_id, chosen, n in session.execute(chunked):
            found.setdefault(evaluator_id, Counter())[str(chosen)] += n
    return {e: straight_lining(*_habits(sides)) for e, sides in found.items()}


class Tally:
    def __init__(self, *, study: Study, dialect: str) -> None:
        self.study_id = study.id
        self.first_criterion = study.criterion_keys[0]
        self.dialect = dialect
        self.settle_s = SETTLE_SECONDS.get(dialect, 0.0)
        self.settled = 0
        self.window: dict[int, _Counted] = {}
        self.checkpoints: deque[tuple[float, int]] = deque()
        self.cube: Counter[CubeKey] = Counter()
        self.excluded: Counter[CubeKey] = Counter()
        self.trials: dict[int, list[int]] = {}
        self.minutes: Counter[str] = Counter()
        self.flagged_evaluators: set[int] = set()
        # evaluator -> their answers on the first criterion: left, right, tie (straight-lining)
        self.sides: dict[int, Counter[str]] = {}
        self.matchups: dict[int, _Matchup] = {}
        self.criteria = tuple(study.criterion_keys)
        self.gold_min_accuracy = rating_spec(study).gold_min_accuracy
        self.gold_answered = 0  # answered gold trials scored so far
        self.gold_flagged: set[int] = set()  # evaluators below the gold accuracy threshold
        self.version = 0
        self.built_at = time.monotonic()

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, *, session: Session, study: Study) -> Tally:
        """Cold: GROUP BY over the study's votes, then the newest ones one by one."""
        tally = cls(study=study, dialect=session.get_bind().dialect.name)
        top = session.scalar(select(func.max(Vote.id))) or 0
        cut = max(0, top - COLD_WINDOW_IDS.get(tally.dialect, 0))
        tally._load_matchups(session)
        for matchup_id, criterion, a_on_left, choice, flagged, n in session.execute(
            _cube_query(upto=cut).where(votes.in_study(study.id))
        ):
            tally.cube[tally._key(matchup_id, criterion, a_on_left, choice, flagged)] += n
        for evaluator_id, flagged, minute, choice, n in session.execute(
            tally._trials_query(upto=cut)
        ):
            tally._count_trials(evaluator_id, flagged=flagged, minute=minute, n=n, choice=choice)
        tally._gold_pass(session)
        tally.flagged_evaluators = {
            e for e in tally.trials.keys() | tally.gold_flagged if tally._excluded(e)
        }
        tally.excluded.update(tally._votes_of(session, tally.flagged_evaluators, upto=cut))
        tally.settled = cut
        tally.advance(session=session)
        return tally

    def _load_matchups(self, session: Session) -> None:
        arm_a, arm_b = aliased(Arm), aliased(Arm)
        rows = session.execute(
            select(Matchup.id, arm_a.name, arm_b.name, Prompt.theme)
            .join(arm_a, arm_a.id == Matchup.arm_a_id)
            .join(arm_b, arm_b.id == Matchup.arm_b_id)
            .join(Prompt, Prompt.id == Matchup.prompt_id)
            .where(Matchup.study_id == self.study_id)
        )
        self.matchups = {m: _Matchup(a, b, theme) for m, a, b, theme in rows}

    def _trials_query(self, *, upto: int) -> Any:
        """Answered trials by (evaluator, flagged, minute, choice): each trial's vote on the
        first criterion stands for the trial (every answered trial has exactly one)."""
        minute = minute_text(Trial.answered_at, self.dialect)
        columns = (Trial.evaluator_id, Trial.flagged, minute, type_coerce(Vote.choice, String))
        return (
            votes.study_votes(*columns, func.count(), study_id=self.study_id)
            .where(Vote.criterion == self.first_criterion, Vote.id <= upto)
            .group_by(*columns)
        )

    # --- advancing --------------------------------------------------------------------------

    def advance(self, *, session: Session) -> bool:
        """Count the votes written since the last call; True when anything changed."""
        now = time.monotonic()
        rows = session.execute(_delta_query(after=self.settled, dialect=self.dialect)).all()
        top = rows[-1].id if rows else self.settled
        fresh = [r for r in rows if r.study_id == self.study_id and r.id not in self.window]
        if any(r.matchup_id not in self.matchups for r in fresh):
            self._load_matchups(session)  # clips finished since: new matchups
        for row in fresh:
            self.window[row.id] = self._add(row)
        regolded = self._gold_pass(session)
        reflagged = self._reflag(session, {r.evaluator_id for r in fresh} | regolded)
        self._settle(now, top)
        if fresh or reflagged:
            self.version += 1
        return bool(fresh or reflagged)

    def _add(self, row: Any) -> _Counted:
        key = None
        if not row.is_repeat:
            key = self._key(row.matchup_id, row.criterion, row.a_on_left, row.choice, row.flagged)
            self.cube[key] += 1
            if row.evaluator_id in self.flagged_evaluators:
                self.excluded[key] += 1
        if row.criterion == self.first_criterion:
            self._count_trials(
                row.evaluator_id, flagged=row.flagged, minute=row.minute, n=1, choice=row.choice
            )
        return _Counted(row.evaluator_id, key)

    def _reflag(self, session: Session, evaluators: set[int]) -> bool:
        """Move evaluators whose flagged share crossed the threshold in or out of `excluded`."""
        flagged_now = {e for e in evaluators if self._excluded(e)}
        entering = flagged_now - self.flagged_evaluators
        leaving = (evaluators - flagged_now) & self.flagged_evaluators
        for group, sign in ((entering, 1), (leaving, -1)):
            for key, n in self._counted_votes(session, group).items():
                self.excluded[key] += sign * n
        self.flagged_evaluators = (self.flagged_evaluators | entering) - leaving
        return bool(entering or leaving)

    def _gold_pass(self, session: Session) -> set[int]:
        """Re-score the gold checks when answered gold trials were added; the evaluators whose
        gold flag changed."""
        answered = session.scalar(_gold_answered_query(self.study_id)) or 0
        if answered == self.gold_answered:
            return set()
        self.gold_answered = answered
        scores = gold.scores(
            session=session,
            study_id=self.study_id,
            criteria=self.criteria,
            min_accuracy=self.gold_min_accuracy,
        )
        now = {e for e, score in scores.items() if score.flagged}
        changed = now ^ self.gold_flagged
        self.gold_flagged = now
        return changed

    def _counted_votes(self, session: Session, evaluators: set[int]) -> Counter[CubeKey]:
        """The cube entries of these evaluators' votes counted so far."""
        found = self._votes_of(session, evaluators, upto=self.settled)
        for counted in self.window.values():
            if counted.key is not None and counted.evaluator_id in evaluators:
                found[counted.key] += 1
        return found

    def _votes_of(self, session: Session, evaluators: set[int], *, upto: int) -> Counter[CubeKey]:
        found: Counter[CubeKey] = Counter()
        ids = sorted(evaluators)
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            query = _cube_query(upto=upto).where(Trial.evaluator_id.in_(chunk))
            for matchup_id, criterion, a_on_left, choice, flagged, n in session.execute(query):
                found[self._key(matchup_id, criterion, a_on_left, choice, flagged)] += n
        return found

    def _settle(self, now: float, top: int) -> None:
        """Every id up to the largest one visible SETTLE seconds ago is committed by now."""
        if not self.settle_s:
            self.settled = max(self.settled, top)
            self.window.clear()
            return
        self.checkpoints.append((now, top))
        while self.checkpoints and now - self.checkpoints[0][0] >= self.settle_s:
            self.settled = max(self.settled, self.checkpoints.popleft()[1])
        self.window = {i: c for i, c in self.window.items() if i > self.settled}

    # --- reading ----------------------------------------------------------------------------

    def _key(
        self, matchup_id: int, criterion: str, a_on_left: bool, choice: Any, flagged: bool
    ) -> CubeKey:
        m = self.matchups[matchup_id]
        left_arm, right_arm = votes.sides(m.arm_a, m.arm_b, a_on_left)
        return (criterion, m.theme, left_arm, right_arm, str(choice), bool(flagged))

    def _count_trials(
        self, evaluator_id: int, *, flagged: bool, minute: str | None, n: int, choice: Any
    ) -> None:
        counts = self.trials.setdefault(evaluator_id, [0, 0])
        counts[0] += n
        counts[1] += n if flagged else 0
        if minute:
            self.minutes[minute] += n
        self.sides.setdefault(evaluator_id, Counter())[str(choice)] += n

    def _excluded(self, evaluator_id: int) -> bool:
        """Whether the flagged-evaluators filter leaves the evaluator out: too many flagged
        trials, gold checks below the threshold, or straight-lining (first criterion)."""
        sides = self.sides.get(evaluator_id)
        return (
            is_flagged(*self.trials.get(evaluator_id, (0, 0)))
            or evaluator_id in self.gold_flagged
            or (sides is not None and straight_lining(*_habits(sides)).flagged)
        )

    def grouped_rows(
        self,
        *,
        exclude_flagged_trials: bool = False,
        exclude_flagged_evaluators: bool = False,
        exclude_ties: bool = False,
    ) -> Iterator[tuple[str, str, str, str, str, int]]:
        """`(criterion, theme, left_arm, right_arm, choice, n)` rows for `from_grouped`."""
        for key, n in self.cube.items():
            criterion, theme, left_arm, right_arm, choice, flagged = key
            if (exclude_flagged_trials and flagged) or (exclude_ties and choice == "tie"):
                continue
            if exclude_flagged_evaluators:
                n -= self.excluded.get(key, 0)
            if n > 0:
                yield criterion, theme, left_arm, right_arm, choice, n

    def snapshot(
        self, *, arms: Iterable[str], criteria: Iterable[str], **filters: bool
    ) -> TallySnapshot:
        counts = VoteCounts.from_grouped(
            list(self.grouped_rows(**filters)), arms=tuple(arms), criteria=tuple(criteria)
        )
        return TallySnapshot(
            version=self.version,
            counts=counts,
            evaluator_trials={e: (a, f) for e, (a, f) in self.trials.items()},
            minutes=dict(self.minutes),
            flagged_evaluators=frozenset(self.flagged_evaluators),
        )


def _gold_answered_query(study_id: int) -> Any:
    """The study's answered gold trials (their count)."""
    return (
        select(func.count())
        .select_from(Trial)
        .join(GoldPair, GoldPair.id == Trial.gold_pair_id)
        .where(GoldPair.study_id == study_id, Trial.answered_at.is_not(None))
    )


def _cube_query(*, upto: int) -> Any:
    """First-showing votes up to id `upto` by (matchup, criterion, side, choice, flagged), of
    every study (callers add the study or the evaluators)."""
    columns = (Trial.matchup_id, Vote.criterion, Trial.a_on_left, Vote.choice, Trial.flagged)
    return (
        votes.select_votes(*columns, func.count())
        .where(Trial.is_repeat == false(), Vote.id <= upto)
        .group_by(*columns)
    )


def _delta_query(*, after: int, dialect: str) -> Any:
    """Every vote above id `after`, of any study: a primary-key range (filtering by study here
    would make SQLite's planner walk the study's whole index instead)."""
    return (
        votes.select_votes(
            Vote.id,
            Matchup.study_id,
            Trial.evaluator_id,
            Trial.matchup_id,
            Vote.criterion,
            Trial.a_on_left,
            Vote.choice,
            Trial.flagged,
            Trial.is_repeat,
            minute_text(Trial.answered_at, dialect).label("minute"),
        )
        .where(Vote.id > after)
        .order_by(Vote.id)
    )


class TallyCache:
    """One tally per study for this process, shared by every dashboard client; each study's
    tally is built and advanced under its own lock."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Any, threading.Lock] = {}
        self._tallies: dict[Any, Tally] = {}

    def snapshot(self, *, session: Session, study: Study, **filters: bool) -> TallySnapshot:
        key = (study.id, study.created_at)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            tally = self._tallies.get(key)
            top = session.scalar(select(func.max(Vote.id))) or 0
            if tally is None or _needs_rebuild(tally, top):
                tally = self._tallies[key] = Tally.build(session=session, study=study)
            elif top != tally.settled or tally.window:
                tally.advance(session=session)
            arms = [arm.name for arm in study.arms]
            return tally.snapshot(arms=arms, criteria=study.criterion_keys, **filters)


def _needs_rebuild(tally: Tally, top: int) -> bool:
    return (
        top < tally.settled  # votes were deleted
        or top - tally.settled > REBUILD_GAP_IDS
        or time.monotonic() - tally.built_at > REBUILD_SECONDS
    )


# --- finished evaluators: the verdicts' units ---------------------------------------------------

_MONITORS_KEPT = 4  # plans whose sequences are kept per study (the plan rarely changes)


@dataclass
class Units:
    """A study's finished evaluators, in the order they finished, with their first-showing
    vote counts (`UnitCounts` rows), and the plan's sequences fed from them.

    Append-only: an evaluator's votes are read once, when they finish (or when the study
    closes), and added to the sequences; an evaluator who finished "before" one already
    counted (a late commit) or a counted one that is gone makes the caller start over. Flagged
    evaluators (at least FLAGGED_EVALUATOR_SHARE of their trials flagged, or gold accuracy below
    the study's threshold; final once they have finished) are skipped, as the dashboard's
    filter would."""

    arms: tuple[str, ...]
    criteria: tuple[str, ...]
    finished: list[tuple[Any, int]] = field(default_factory=list)  # (order key, evaluator)
    counted: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # one [criterion, pair, 3] per counted
    monitors: dict[Plan, tuple[Monitor, int]] = field(default_factory=dict)

    def continues(self, finished: Sequence[tuple[Any, int]]) -> bool:
        """True when the evaluators counted so far are the first of `finished`."""
        return list(finished[: len(self.finished)]) == self.finished

    def add(self, session: Session, study: Study, finished: Sequence[tuple[Any, int]]) -> None:
        new = list(finished[len(self.finished) :])
        if not new:
            return
        ids = [evaluator for _, evaluator in new]
        arm_names = {arm.id: arm.name for arm in study.arms}
        flagged = _flagged_among(session, ids)
        flagged |= {
            e
            for e, test in straight_liners(session, study=study, evaluator_ids=ids).items()
            if test.flagged
        }
        spec = rating_spec(study)
        flagged |= gold.flagged_among(
            session=session,
            evaluator_ids=ids,
            criteria=study.criterion_keys,
            min_accuracy=spec.gold_min_accuracy,
        )
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = [e for e in ids[start : start + _IN_CHUNK] if e not in flagged]
            if not chunk:
                continue
            counts = UnitCounts.from_rows(
                _unit_rows(session, chunk, arm_names),
                order=chunk,
                arms=self.arms,
                criteria=self.criteria,
            )
            self.counted.extend(chunk)
            self.rows.extend(counts.cube)
        self.finished.extend(new)

    def monitor(self, plan: Plan) -> Monitor:
        """The plan's sequences, extended with the units counted since they were last read."""
        monitor, used = self.monitors.get(plan) or (Monitor(plan), 0)
        if used < len(self.counted):
            cube = np.stack(self.rows[used:])
            monitor.extend(UnitCounts(self.arms, self.criteria, tuple(self.counted[used:]), cube))
        self.monitors.pop(plan, None)
        self.monitors[plan] = (monitor, len(self.counted))
        while len(self.monitors) > _MONITORS_KEPT:
            self.monitors.pop(next(iter(self.monitors)))
        return monitor


def finished_evaluators(session: Session, study: Study) -> list[tuple[Any, int]]:
    """The study's finished evaluators in the order they finished: completed, by completion
    time; once the study is closed, then everyone else who answered, by their last answer."""
    rows = session.execute(
        select(Evaluator.id, Evaluator.completed_at).where(
            Evaluator.study_id == study.id, Evaluator.completed_at.is_not(None)
        )
    )
    finished: list[tuple[Any, int]] = [((0, done), e) for e, done in rows]
    if study.status == StudyStatus.closed:
        last = session.execute(
            select(Trial.evaluator_id, func.max(Trial.answered_at))
            .join(Evaluator, Evaluator.id == Trial.evaluator_id)
            .where(
                Evaluator.study_id == study.id,
                Evaluator.completed_at.is_(None),
                Trial.answered_at.is_not(None),
            )
            .group_by(Trial.evaluator_id)
        )
        finished.extend(((1, answered), e) for e, answered in last)
    return sorted(finished, key=lambda item: (item[0], item[1]))


def _flagged_among(session: Session, evaluators: Sequence[int]) -> set[int]:
    """Those of `evaluators` with at least FLAGGED_EVALUATOR_SHARE of their answered trials
    flagged (repeats included, gold trials not, as the tally counts them)."""
    out: set[int] = set()
    for start in range(0, len(evaluators), _IN_CHUNK):
        chunk = evaluators[start : start + _IN_CHUNK]
        rows = session.execute(
            select(Trial.evaluator_id, func.count(), func.sum(case((Trial.flagged, 1), else_=0)))
            .where(
                Trial.evaluator_id.in_(chunk),
                Trial.answered_at.is_not(None),
                Trial.gold_pair_id.is_(None),
            )
            .group_by(Trial.evaluator_id)
        )
        out.update(e for e, answered, flagged in rows if is_flagged(answered, flagged or 0))
    return out


def _unit_rows(
    session: Session, evaluators: Sequence[int], arm_names: dict[int, str]
) -> Iterable[tuple[int, str, str, str, str, int]]:
    """`(evaluator, criterion, arm, other arm, winner, count)` of these evaluators'
    first-showing votes (repeats out), for `UnitCounts.from_rows`."""
    choice = type_coerce(Vote.choice, String)
    columns = (
        Trial.evaluator_id,
        Vote.criterion,
        Matchup.arm_a_id,
        Matchup.arm_b_id,
        Trial.a_on_left,
        choice,
    )
    query = (
        votes.select_votes(*columns, func.count())
        .where(Trial.evaluator_id.in_(evaluators), Trial.is_repeat == false())
        .group_by(*columns)
    )
    for evaluator, criterion, arm_a, arm_b, a_on_left, chosen, n in session.execute(query):
        a, b = arm_names[arm_a], arm_names[arm_b]
        side = votes.chosen(chosen, a_on_left)
        winner = "tie" if side == "tie" else (a if side == "a" else b)
        yield evaluator, criterion, a, b, winner, n
