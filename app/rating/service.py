"""Assignment, counters and answers: one algorithm, kept in one module on purpose (longer than
the rest: every write here changes the matchup counters under the same locks, and its invariants,
balanced coverage, counterbalanced sides, no matchup twice, would otherwise span modules).
Keyword-only, callers commit; `app.rating.flow` composes these into the next/submit requests.

Assignment. An evaluator has at most two unanswered trials: the *current* one (lowest position,
`shown_at` set) and one assigned ahead so the browser can prefetch its clips (`shown_at` NULL
until it becomes current). A new trial takes, among the study's ready matchups (both clips done)
this evaluator has not judged, one with the fewest live trials (answered, or assigned within
ASSIGNMENT_HOLD); ties go to a prompt other than the evaluator's previous one, then to the
matchup the most evaluators with fresh trials to come have already judged (the hardest to fill
later), then to a prompt this evaluator has not seen yet, then at random. With adaptive
allocation (`study.allocation`, kept by the stop check from the verdicts), matchups of the arm
pairs still wanted come before all others, the same order within each group. Sides are
counterbalanced per matchup: clip A goes left when it has been left less often than right in the
matchup's live trials, at random when equal, so left/right never differ by more than one.
Repeats (quality control) re-show an answered matchup with the sides swapped, spread through the
session.

Counters. Coverage, sides and "still-rating evaluators" are counters on the matchup (live_trials,
a_left, open_evaluators), changed by the transactions that assign, answer, release or complete,
so choosing a trial is one indexed statement however large the study grows. A trial unanswered
for ASSIGNMENT_HOLD is released (stops counting) by a sweep at most every RELEASE_EVERY per study
and process; answered later, it counts again.

Concurrency. No lock is shared by a whole study: on PostgreSQL the writers of one study run side
by side, coordinated by row locks on what they change, taken so that no two can wait for each
other in a circle:
- every write first locks its evaluator (the row FOR UPDATE), so two tabs get the same trial,
  then changes that evaluator's own trial rows (mark shown, answer);
- a late answer to a released trial then waits for its one matchup row (it counts again);
- an assignment takes its matchup with FOR UPDATE SKIP LOCKED (`_CANDIDATE_LOCKED`): a row
  another transaction holds is skipped for the next least covered, and it never waits on a row
  lock (`_locked_candidate`); the counters change on the row it holds, so coverage and sides
  stay exact per matchup;
- releasing expired holds never waits either (trial and matchup rows with SKIP LOCKED);
- what would wait for several matchup rows (stop judging) runs after the commit, in a
  transaction of its own that holds no other matchup row and takes them in id order (`_settle`).
Skipping can give one assignment the second least covered matchup, so coverage may differ by
two among live trials (one when assignments come one at a time). On SQLite write transactions
begin IMMEDIATE, which serializes them (app.db.WriteLock hands the lock over without polling),
and all of the above runs in the writing transaction.
Reads that change nothing (the current trial already shown, the prefetched trial already
assigned, an evaluator waiting for pairs still rendering) run in read sessions: `peek_current`,
`peek_after`. Unique constraints are the
backstop: (evaluator, position) and (evaluator, matchup, is_repeat) for trials, (trial,
criterion) for votes, (study, invite) and (study, external id) for evaluators.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Integer,
    Row,
    bindparam,
    case,
    cast,
    event,
    false,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, SessionTransaction, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.schema import Table
from sqlalchemy.sql import Executable

from app.clips.models import Clip, ClipStatus
from app.db import Base, utcnow
from app.ops.metrics import count_on_commit
from app.rating import gold, matchups
from app.rating import votes as vote_view
from app.rating.enrollment import check_open, rating_spec
from app.rating.errors import (
    NotCurrentError,
    TimingError,
    TooEarlyError,
    TrialNotFoundError,
    VoteConflictError,
    VoteValidationError,
)
from app.rating.matchups import ensure_matchups
from app.rating.models import Choice, Evaluator, GoldPair, Matchup, Trial, Vote
from app.rating.schemas import ClientTiming, WatchIn
from app.rating.watch import check_watch
from app.studies.models import Prompt, Study, StudyStatus
from app.studies.schemas import completion_url

log = logging.getLogger(__name__)

# An unanswered trial counts towards its matchup's coverage this long; after that the matchup
# may be given to others (the trial stays its evaluator's, should they come back).
ASSIGNMENT_HOLD = timedelta(minutes=30)
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


# --- errors -----------------------------------------------------------------------------------


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    answered: int
    total: int


@dataclass(frozen=True)
class NextResult:
    """`trial`; `done` (finished: quota met, or every pair there will be judged); `waiting`
    (pairs are still to come: ask again after `retry_after` seconds); `unavailable` (nothing
    to rate and nothing coming yet, or nothing to prefetch yet)."""

    status: Literal["trial", "done", "waiting", "unavailable"]
    progress: Progress
    trial: Trial | None = None
    prompt: str | None = None  # the trial's prompt text
    completion_code: str | None = None
    completion_url: str | None = None  # with `done`: the study's, the code in it
    message: str | None = None
    clips: tuple[int, int] | None = None  # the clip ids on the left and right of `trial`
    after: Trial | None = None  # the trial assigned ahead of `trial` (its clips can preload)
    after_prompt: str | None = None
    after_clips: tuple[int, int] | None = None
    retry_after: float | None = None  # seconds, with `waiting`


@dataclass(frozen=True)
class SubmitResult:
    trial: Trial
    votes: dict[str, Choice]
    created: bool


# --- study access -----------------------------------------------------------------------------


# --- matchups ---------------------------------------------------------------------------------


def _run(
    session: Session,
    statement: Executable,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> CursorResult[Any]:
    """Execute a statement that loads no objects on the session's connection (same
    transaction): the ORM's execute layer costs more than the statement itself on SQLite, and
    this runs inside the write lock."""
    return session.connection().execute(statement, params)


def _table(model: type[Base]) -> Table:
    """The Table a model maps, for Core statements: SQLAlchemy types `__table__` as any
    FromClause (a class may map a subquery), and insert() and update() want a table."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


# --- evaluators -------------------------------------------------------------------------------


# --- assignment -------------------------------------------------------------------------------


@dataclass
class _State:
    """An evaluator's trials in position order, with each trial's prompt (one query)."""

    trials: list[Trial]
    prompt_of: dict[int, int]  # trial id -> prompt id
    text_of: dict[int, str]  # trial id -> prompt text
    clips_of: dict[int, tuple[int, int]]  # trial id -> (clip A id, clip B id) of its matchup

    @property
    def total(self) -> int:
        return len(self.trials)

    @property
    def repeats(self) -> int:
        return sum(1 for t in self.trials if t.is_repeat)

    @property
    def golds(self) -> int:
        return sum(1 for t in self.trials if t.gold_pair_id is not None)

    @property
    def fresh(self) -> int:
        return self.total - self.repeats - self.golds

    @property
    def answered(self) -> int:
        return sum(1 for t in self.trials if t.answered_at is not None)

    @property
    def last_position(self) -> int:
        return self.trials[-1].position if self.trials else 0

    @property
    def last_prompt_id(self) -> int | None:
        return self.prompt_of[self.trials[-1].id] if self.trials else None

    @property
    def open(self) -> list[Trial]:
        return [t for t in self.trials if t.answered_at is None]

    def sides(self, trial: Trial) -> tuple[int, int]:
        """The clip ids shown on the left and on the right of `trial` (a gold twin's media id,
        `gold.media_id`, for the twin of a gold trial)."""
        a, b = self.clips_of[trial.id]
        return vote_view.sides(a, b, trial.a_on_left)

    def clip_sides(self, trial: Trial) -> tuple[int, int]:
        """`sides`, a gold twin standing for the clip it was made from (same frames and delays)."""
        a, b = self.clips_of[trial.id]
        return vote_view.sides(a, a if gold.is_twin(b) else b, trial.a_on_left)

    def own(self, trial_id: int) -> Trial:
        for trial in self.trials:
            if trial.id == trial_id:
                return trial
        # The same answer for another evaluator's trial as for none: ids reveal nothing.
        raise TrialNotFoundError(f"You have no trial {trial_id}.")


# A gold twin's media id (`gold.media_id`), in SQL: a BIGINT above every clip id.
_TWIN_MEDIA = literal(gold.MEDIA_BASE, BigInteger) + GoldPair.id

# A gold trial (no matchup) shows its gold pair: the original as clip A, the twin as clip B.
_STATE = (
    select(
        Trial,
        Prompt.id,
        Prompt.text,
        func.coalesce(Matchup.clip_a_id, GoldPair.clip_id),
        func.coalesce(Matchup.clip_b_id, GoldPair.other_clip_id, _TWIN_MEDIA),
    )
    .outerjoin(Matchup, Matchup.id == Trial.matchup_id)
    .outerjoin(GoldPair, GoldPair.id == Trial.gold_pair_id)
    .join(Prompt, Prompt.id == func.coalesce(Matchup.prompt_id, GoldPair.prompt_id))
    .where(Trial.evaluator_id == bindparam("evaluator_id"))
    .order_by(Trial.position)
    .execution_options(populate_existing=True)  # some columns change by plain UPDATEs
)


def _state(session: Session, evaluator: Evaluator) -> _State:
    state = _State(trials=[], prompt_of={}, text_of={}, clips_of={})
    for trial, prompt_id, text, clip_a, clip_b in session.execute(
        _STATE, {"evaluator_id": evaluator.id}
    ):
        state.trials.append(trial)
        state.prompt_of[trial.id], state.text_of[trial.id] = prompt_id, text
        state.clips_of[trial.id] = (clip_a, clip_b)
    return state


# Clips that will be done without anyone acting: their pairs are still to come. Pending clips
# (never queued), failed and cancelled ones are not: an evaluator does not wait for them.
_COMING = (ClipStatus.queued, ClipStatus.rendering)


def _count_matchups(session: Session, study: Study, statuses: tuple[ClipStatus, ...]) -> int:
    """Pairs of clips per prompt among the study's clips in `statuses`."""
    per_prompt = (
        select(func.count(Clip.id).label("k"))
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study.id, Clip.status.in_(statuses))
        .group_by(Clip.prompt_id)
        .subquery()
    )
    pairs = session.scalar(select(func.sum(per_prompt.c.k * (per_prompt.c.k - 1) / 2)))
    return int(pairs or 0)


def count_ready_matchups(*, session: Session, study: Study) -> int:
    """Pairs of done clips per prompt: the ready matchups once `ensure_matchups` has run (counted
    from the clips, so it is right even before it has)."""
    return _count_matchups(session, study, (ClipStatus.done,))


def count_possible_matchups(*, session: Session, study: Study) -> int:
    """Pairs ready now plus those still to come (a clip of the pair queued or rendering)."""
    return _count_matchups(session, study, (ClipStatus.done, *_COMING))


# Possible pairs per study, remembered while they cover the quota: then the plan does not depend
# on their exact number, and counting them (a GROUP BY over the study's clips) is skipped.
_POSSIBLE: dict[tuple[str, int, datetime | None], tuple[float, int]] = {}
_POSSIBLE_TTL = 30.0  # seconds


# (fresh trials, repeats, gold trials) an evaluator gets.
Plan = tuple[int, int, int]


def _plan(session: Session, study: Study, *, exact: bool = False) -> Plan:
    """(fresh trials, repeats, gold trials) an evaluator of this study gets: the quota, or every
    pair, bounded by the pairs that exist or are still to come, not by those ready now, so an
    evaluator who starts while clips render is not finished early; gold trials come on top
    (about `gold_rate` of all trials: the quota counts regular trials only). `exact`: count
    now, whatever is cached."""
    spec = rating_spec(study)
    quota = spec.trials_per_evaluator
    key = (str(session.get_bind().engine.url), study.id, study.created_at)
    checked_at, possible = _POSSIBLE.get(key, (0.0, 0))
    stale = time.monotonic() - checked_at > _POSSIBLE_TTL
    if exact or not quota or possible < quota or stale:
        possible = count_possible_matchups(session=session, study=study)
        _POSSIBLE[key] = (time.monotonic(), possible)
    fresh = min(quota, possible) if quota else possible
    repeats = min(spec.repeat_trials, fresh)
    return fresh, repeats, gold.gold_count(rate=spec.gold_rate, regular=fresh + repeats)


def planned_trials(*, session: Session, study: Study, gold: bool = True) -> int:
    """Trials an evaluator of this study will answer in all (fresh, repeats and gold), or
    without `gold` those that count (fresh and repeats: what the dashboard's trials count)."""
    fresh, repeats, golds = _plan(session, study)
    return fresh + repeats + (golds if gold else 0)


def _progress(state: _State, plan: Plan) -> Progress:
    return Progress(answered=state.answered, total=max(sum(plan), state.total))


def progress(
    *, session: Session, study: Study, evaluator: Evaluator, plan: Plan | None = None
) -> Progress:
    return _progress(_state(session, evaluator), plan or _plan(session, study))


_MATCHUP = _table(Matchup)
_COUNT = (
    update(_MATCHUP)
    .where(_MATCHUP.c.id == bindparam("m_id"))
    .values(
        live_trials=_MATCHUP.c.live_trials + bindparam("d_live"),
        a_left=_MATCHUP.c.a_left + bindparam("d_left"),
        open_evaluators=_MATCHUP.c.open_evaluators + bindparam("d_open"),
    )
)


def _count(session: Session, changes: list[tuple[int, int, int, int]]) -> None:
    """Apply (matchup id, +live trials, +A on the left, +open evaluators) to the counters, in
    matchup id order (PostgreSQL: row locks taken in one order cannot deadlock)."""
    if changes:
        changes = sorted(changes)
        _run(
            session,
            _COUNT,
            [
                {"m_id": m, "d_live": live, "d_left": left, "d_open": opening}
                for m, live, left, opening in changes
            ],
        )


# Holds are released at most this often per study and process (a statement saved per assignment).
RELEASE_EVERY = timedelta(seconds=5)
_RELEASED: dict[tuple[str, int], datetime] = {}
# PostgreSQL: what a lost `_settle` left (a crash between a commit and its follow-up) is repaired
# this often per study and process: rare, and a scan of the completed evaluators' trials.
REPAIR_EVERY = timedelta(minutes=5)
_REPAIRED: dict[tuple[str, int], datetime] = {}


def _release_expired(session: Session, *, study_id: int, now: datetime) -> None:
    """Unanswered fresh trials past their hold stop counting towards coverage (so the matchup
    goes to someone else); cheap when there are none, through a partial index. PostgreSQL: it
    never waits (see "Concurrency"): trials being answered and matchup rows others hold are
    left for the next sweep, which also repairs what a lost `_settle` left."""
    key = (str(_engine(session).url), study_id)
    last = _RELEASED.get(key)
    if last is not None and last <= now < last + RELEASE_EVERY:
        return
    _RELEASED[key] = now
    trial = _TRIAL
    expired = select(trial.c.id).where(
        trial.c.answered_at.is_(None),
        trial.c.released_at.is_(None),
        trial.c.assigned_at < now - ASSIGNMENT_HOLD,
        trial.c.is_repeat == false(),
        trial.c.matchup_id.in_(select(Matchup.id).where(Matchup.study_id == study_id)),
    )
    if _postgres(session):
        free = select(Matchup.id).where(
            Matchup.id.in_(
                select(trial.c.matchup_id).where(trial.c.id.in_(expired.scalar_subquery()))
            )
        )
        expired = expired.where(
            trial.c.matchup_id.in_(free.with_for_update(skip_locked=True).scalar_subquery())
        ).with_for_update(of=trial, skip_locked=True)
        last_repair = _REPAIRED.get(key)
        if last_repair is None or not last_repair <= now < last_repair + REPAIR_EVERY:
            _REPAIRED[key] = now
            _after_commit(session, ("repair", study_id))
    released = session.execute(
        update(trial)
        .where(trial.c.id.in_(expired), trial.c.answered_at.is_(None))
        .values(released_at=now)
        .returning(trial.c.matchup_id, trial.c.a_on_left)
    ).all()
    _count(session, [(m, -1, -int(a_on_left), 0) for m, a_on_left in released])


_TRIAL = _table(Trial)
_INSERT_TRIAL = insert(_TRIAL).returning(_TRIAL.c.id)


def _new_trial(
    session: Session,
    *,
    evaluator: Evaluator,
    state: _State,
    matchup_id: int | None,
    prompt: tuple[int, str],
    clips: tuple[int, int],
    a_on_left: bool,
    is_repeat: bool,
    now: datetime,
    shown: bool,
    judging: bool = False,
    gold_pair_id: int | None = None,
) -> Trial:
    values = {
        "evaluator_id": evaluator.id,
        "matchup_id": matchup_id,
        "gold_pair_id": gold_pair_id,
        "position": state.last_position + 1,
        "a_on_left": a_on_left,
        "is_repeat": is_repeat,
        "judging": judging,
        "assigned_at": now,
        "shown_at": now if shown else None,
    }
    # A plain INSERT (the unit of work costs more than the statement), then the same row as a
    # persistent object, every column set, so nothing lazy-loads it again.
    trial_id = _run(session, _INSERT_TRIAL, values).scalar_one()
    trial = Trial(
        id=trial_id, answered_at=None, released_at=None, flagged=False, flag_reason=None, **values
    )
    make_transient_to_detached(trial)
    session.add(trial)
    count_on_commit(session, assigned=1)
    state.trials.append(trial)
    state.prompt_of[trial.id], state.text_of[trial.id] = prompt
    state.clips_of[trial.id] = clips
    return trial


# The next fresh matchup for an evaluator (built once: building costs more than running it).
_CANDIDATE = (
    matchups.ready(
        select(
            Matchup.id,
            Matchup.prompt_id,
            Matchup.clip_a_id,
            Matchup.clip_b_id,
            Matchup.live_trials,
            Matchup.a_left,
            Prompt.text,
        )
    )
    .join(Prompt, Prompt.id == Matchup.prompt_id)
    .where(
        Matchup.study_id == bindparam("study_id"),
        Matchup.id.not_in(bindparam("judged", expanding=True)),
    )
    .order_by(
        # Adaptive allocation: matchups of the wanted arm pairs first (all rank 0 otherwise).
        case(
            (
                (
                    cast(Matchup.arm_a_id, BigInteger) * bindparam("span", type_=BigInteger)
                    + Matchup.arm_b_id
                ).in_(bindparam("wanted", expanding=True)),
                0,
            ),
            else_=bindparam("others_rank", type_=Integer),
        ),
        Matchup.live_trials,
        case((Matchup.prompt_id == bindparam("last_prompt"), 1), else_=0),
        Matchup.open_evaluators.desc(),
        case((Matchup.prompt_id.in_(bindparam("seen", expanding=True)), 1), else_=0),
        func.random(),
    )
    .limit(1)
)


# PostgreSQL: the chosen matchup row is locked until commit, and rows other assignments hold
# are skipped (the next least covered is taken): assignments of one study run side by side.
_CANDIDATE_LOCKED = _CANDIDATE.with_for_update(of=Matchup, skip_locked=True)
# Every candidate may be held for a moment (assignments, counter changes after a commit): try
# again this many times, a little later each time, before answering that none is free.
PICK_TRIES = 8
PICK_BACKOFF_S = 0.002


def _locked_candidate(session: Session, params: dict[str, object]) -> Row[Any] | None:
    """The candidate row, locked (PostgreSQL). Only when none can be locked, whether any exists
    (unlocked) is asked: then the holders are waited out with backoff (they commit within
    milliseconds), never by waiting on a row lock, which could close a circle."""
    for attempt in range(PICK_TRIES):
        row = _run(session, _CANDIDATE_LOCKED, params).first()
        if row is not None or _run(session, _CANDIDATE, params).first() is None:
            return row
        time.sleep(PICK_BACKOFF_S * 2**attempt * (0.5 + random.random()))
    return None


def _candidate_params(study: Study, state: _State) -> dict[str, object]:
    allocation = study.allocation or {}
    wanted = [int(k) for k in allocation.get("keys") or ()]
    return {
        "study_id": study.id,
        "judged": [t.matchup_id for t in state.trials if t.matchup_id is not None],
        "last_prompt": state.last_prompt_id or -1,
        "seen": list(set(state.prompt_of.values())),
        "wanted": wanted,
        "span": int(allocation.get("span") or 0),
        "others_rank": 1 if wanted else 0,
    }


def _assign_fresh(
    session: Session,
    *,
    study: Study,
    evaluator: Evaluator,
    state: _State,
    now: datetime,
    shown: bool,
    fresh_total: int,
) -> Trial | None:
    """One indexed pass over the study's matchups, ordered by the counters (see module doc)."""
    _release_expired(session, study_id=study.id, now=now)
    params = _candidate_params(study, state)
    if _postgres(session):
        row = _locked_candidate(session, params)
    else:
        row = _run(session, _CANDIDATE, params).first()
    if row is None:
        return None
    # Counterbalance: A goes to the side it has been on less often in the matchup's live trials.
    a_right = row.live_trials - row.a_left
    a_on_left = row.a_left < a_right or (row.a_left == a_right and random.random() < 0.5)
    judging = state.fresh + 1 < fresh_total  # this evaluator has fresh trials to come
    _count(session, [(row.id, 1, int(a_on_left), int(judging))])
    if not judging:
        _stop_judging(session, evaluator=evaluator)
    return _new_trial(
        session,
        evaluator=evaluator,
        state=state,
        matchup_id=row.id,
        prompt=(row.prompt_id, row.text),
        clips=(row.clip_a_id, row.clip_b_id),
        a_on_left=a_on_left,
        is_repeat=False,
        judging=judging,
        now=now,
        shown=shown,
    )


def _stop_judging(session: Session, *, evaluator: Evaluator) -> None:
    """The evaluator takes no more fresh trials: its matchups stop counting it as open.
    PostgreSQL: in a transaction of its own after this one commits (see "Concurrency")."""
    if _postgres(session):
        _after_commit(session, ("stop", evaluator.id))
    else:
        _stop_judging_now(session, evaluator_id=evaluator.id)


def _stop_judging_now(session: Session, *, evaluator_id: int) -> None:
    trial = _TRIAL
    matchups = session.scalars(
        update(trial)
        .where(trial.c.evaluator_id == evaluator_id, trial.c.judging == true())
        .values(judging=False)
        .returning(trial.c.matchup_id)
    ).all()
    _count(session, [(m, 0, 0, -1) for m in matchups])


def _stop_judging_completed(session: Session, *, study_id: int) -> None:
    """What a `_stop_judging` lost to a crash between its two transactions left: judging trials
    of evaluators who completed. Trials being changed right now are left for the next sweep."""
    trial = _TRIAL
    stale = (
        select(trial.c.id)
        .join(Evaluator, Evaluator.id == trial.c.evaluator_id)
        .where(
            trial.c.judging == true(),
            Evaluator.study_id == study_id,
            Evaluator.completed_at.is_not(None),
        )
        .with_for_update(of=trial, skip_locked=True)
    )
    matchups = session.scalars(
        update(trial)
        .where(trial.c.id.in_(stale))
        .values(judging=False)
        .returning(trial.c.matchup_id)
    ).all()
    _count(session, [(m, 0, 0, -1) for m in matchups])


# --- PostgreSQL: the counter changes that wait, each after its transaction commits -----------

_AFTER_COMMIT = "vidarena_rating_after_commit"  # work of the transaction in progress
_SETTLE = "vidarena_rating_settle"  # work of the transaction that committed


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind.engine if isinstance(bind, Connection) else bind


def _postgres(session: Session) -> bool:
    return _engine(session).dialect.name == "postgresql"


def _after_commit(session: Session, work: tuple[str, int]) -> None:
    session.info.setdefault(_AFTER_COMMIT, []).append(work)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if not session.in_nested_transaction():  # a savepoint's commit is not the commit
        work = session.info.pop(_AFTER_COMMIT, None)
        if work:
            session.info[_SETTLE] = work


@event.listens_for(Session, "after_transaction_end")
def _settle(session: Session, transaction: SessionTransaction) -> None:
    """Run the counter changes a committed transaction left (stop judging, repairs), each
    in a short transaction of its own that holds no other matchup row while it waits for rows
    in id order. Runs once the committed transaction has given its connection back (a request
    never holds two). A failure here loses no answer: the next release sweep repairs it."""
    if transaction.parent is not None:
        return
    work = session.info.pop(_SETTLE, None)
    if not work:
        return
    engine = _engine(session)
    for kind, arg in dict.fromkeys(work):  # each once, in order
        try:
            with Session(engine) as side, side.begin():
                if kind == "stop":
                    _stop_judging_now(side, evaluator_id=arg)
                else:
                    _stop_judging_completed(side, study_id=arg)
        except Exception:
            log.warning("rating counters: %s %s left for the next sweep", kind, arg, exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)
    session.info.pop(_SETTLE, None)


def _assign_repeat(
    session: Session, *, evaluator: Evaluator, state: _State, now: datetime, shown: bool
) -> Trial | None:
    """Repeat one of the evaluator's answered matchups with the sides swapped."""
    repeated = {t.matchup_id for t in state.trials if t.is_repeat}
    originals = [
        t
        for t in state.trials
        if not t.is_repeat
        and t.matchup_id is not None  # gold trials are never repeated
        and t.answered_at is not None
        and t.matchup_id not in repeated
    ]
    if not originals:
        return None
    ready = set(
        session.scalars(
            matchups.ready(select(Matchup.id)).where(
                Matchup.id.in_([t.matchup_id for t in originals])
            )
        )
    )
    candidates = [t for t in originals if t.matchup_id in ready]
    if not candidates:
        return None
    elsewhere = [t for t in candidates if state.prompt_of[t.id] != state.last_prompt_id]
    original = random.choice(elsewhere or candidates)
    return _new_trial(
        session,
        evaluator=evaluator,
        state=state,
        matchup_id=original.matchup_id,
        prompt=(state.prompt_of[original.id], state.text_of[original.id]),
        clips=state.clips_of[original.id],
        a_on_left=not original.a_on_left,
        is_repeat=True,
        now=now,
        shown=shown,
    )


def _gold_due(study: Study, state: _State, plan: Plan) -> bool:
    """Whether the evaluator's next trial is a gold one: its positions (`gold.gold_positions`,
    drawn per evaluator, never the first) up to the next have more gold trials than given."""
    if not plan[2] or not state.trials:
        return False
    positions = gold.gold_positions(
        rate=rating_spec(study).gold_rate,
        regular=plan[0] + plan[1],
        seed=str(state.trials[0].evaluator_id),
    )
    due = sum(1 for p in positions if p <= state.last_position + 1)
    return state.golds < min(due, plan[2])


# A gold pair for an evaluator: one they have not seen, of a kind the study's criteria score,
# whose clips are done; another prompt than their previous trial's first, then at random.
_GOLD_CANDIDATE = (
    select(
        GoldPair.id,
        GoldPair.prompt_id,
        GoldPair.clip_id,
        func.coalesce(GoldPair.other_clip_id, _TWIN_MEDIA).label("twin"),
        Prompt.text,
    )
    .join(Prompt, Prompt.id == GoldPair.prompt_id)
    .join(Clip, Clip.id == GoldPair.clip_id)
    .where(
        GoldPair.study_id == bindparam("study_id"),
        GoldPair.kind.in_(bindparam("kinds", expanding=True)),
        GoldPair.id.not_in(bindparam("shown", expanding=True)),
        Clip.status == ClipStatus.done,
        (GoldPair.other_clip_id.is_(None))
        | GoldPair.other_clip_id.in_(select(Clip.id).where(Clip.status == ClipStatus.done)),
    )
    .order_by(
        case((GoldPair.prompt_id == bindparam("last_prompt"), 1), else_=0),
        func.random(),
    )
    .limit(1)
)


def _assign_gold(
    session: Session,
    *,
    study: Study,
    evaluator: Evaluator,
    state: _State,
    now: datetime,
    shown: bool,
) -> Trial | None:
    """A gold trial (app/rating/gold.py): a gold pair, sides at random. It judges no matchup,
    so no counter changes."""
    row = _run(
        session,
        _GOLD_CANDIDATE,
        {
            "study_id": study.id,
            "kinds": [k.value for k in gold.usable_kinds(study.criterion_keys)],
            "shown": [t.gold_pair_id for t in state.trials if t.gold_pair_id is not None],
            "last_prompt": state.last_prompt_id or -1,
        },
    ).first()
    if row is None:
        return None
    return _new_trial(
        session,
        evaluator=evaluator,
        state=state,
        matchup_id=None,
        gold_pair_id=row.id,
        prompt=(row.prompt_id, row.text),
        clips=(row.clip_id, row.twin),
        a_on_left=random.random() < 0.5,
        is_repeat=False,
        now=now,
        shown=shown,
    )


def _repeat_due(state: _State, plan: Plan) -> bool:
    """Repeats are spread through the session: repeat k is due after k/(R+1) of the fresh trials."""
    fresh_total, repeat_total, _ = plan
    return state.repeats < repeat_total and (
        state.fresh >= fresh_total
        or state.fresh >= math.ceil(fresh_total * (state.repeats + 1) / (repeat_total + 1))
    )


def _assign(
    session: Session,
    *,
    study: Study,
    evaluator: Evaluator,
    state: _State,
    now: datetime,
    shown: bool,
    plan: Plan,
    exact: bool = False,
) -> tuple[Trial | None, Literal["quota", "exhausted", "wait", "stopped"] | None]:
    """A new trial for the evaluator, or why there is none: "quota" (all planned trials are
    assigned), "exhausted" (no repeat can be made), "wait" (pairs still to come)."""
    fresh_total = plan[0]
    if study.stopped_at is not None:  # decided (its plan's stop rule): no new pairs
        return None, "stopped"
    if state.total >= sum(plan):
        return None, "quota"
    if _gold_due(study, state, plan):
        # None made yet (twins come shortly after clips): a regular trial, gold the next time.
        trial = _assign_gold(
            session, study=study, evaluator=evaluator, state=state, now=now, shown=shown
        )
        if trial is not None:
            return trial, None
    if _repeat_due(state, plan):
        trial = _assign_repeat(session, evaluator=evaluator, state=state, now=now, shown=shown)
        if trial is not None:
            return trial, None
        if state.fresh >= fresh_total:
            return None, "wait"  # the originals are not answered yet
    if state.fresh < fresh_total:
        for attempt in range(2):
            trial = _assign_fresh(
                session,
                study=study,
                evaluator=evaluator,
                state=state,
                now=now,
                shown=shown,
                fresh_total=fresh_total,
            )
            if trial is not None:
                return trial, None
            # Clips done (or imported) whose matchups were not made yet: make them, try again.
            if attempt or not ensure_matchups(session=session, study=study):
                break
        # None ready for this evaluator. The plan counts pairs still to come, so they wait,
        # unless the plan was stale (a clip failed or was cancelled meanwhile): then re-plan.
        if not exact:
            now_plan = _plan(session, study, exact=True)
            if now_plan != plan:
                return _assign(
                    session,
                    study=study,
                    evaluator=evaluator,
                    state=state,
                    now=now,
                    shown=shown,
                    plan=now_plan,
                    exact=True,
                )
        return None, "wait"
    return None, "exhausted"


def _complete(
    session: Session, *, study: Study, evaluator: Evaluator, state: _State, now: datetime
) -> None:
    if evaluator.completed_at is not None:
        return
    evaluator.completed_at = now
    spec = rating_spec(study)
    evaluator.completion_code = spec.completion_code or "".join(
        secrets.choice(_CODE_ALPHABET) for _ in range(10)
    )
    if spec.screenout_code:
        failed = gold.failed_checks(session=session, evaluator_id=evaluator.id)
        if failed >= gold.REJECT_AFTER_FAILURES:
            # Failed the gold checks (Prolific's policy: at least two): the screen-out code.
            evaluator.completion_code = spec.screenout_code
    _stop_judging(session, evaluator=evaluator)
    session.flush()


def _done(
    session: Session,
    *,
    study: Study,
    evaluator: Evaluator,
    state: _State,
    plan: Plan | None = None,
) -> NextResult:
    template = rating_spec(study).completion_url
    code = evaluator.completion_code
    return NextResult(
        status="done",
        progress=_progress(state, plan or _plan(session, study)),
        completion_code=code,
        completion_url=completion_url(template, code) if template and code else None,
        message="You have finished. Thank you!"
        if study.stopped_at is None
        else "This study has the answers it needed and has stopped. Thank you!",
    )


def _trial_result(
    session: Session,
    *,
    study: Study,
    state: _State,
    trial: Trial,
    plan: Plan | None = None,
) -> NextResult:
    return NextResult(
        status="trial",
        trial=trial,
        prompt=state.text_of[trial.id],
        clips=state.sides(trial),
        progress=_progress(state, plan or _plan(session, study)),
    )


def _lock_evaluator(session: Session, evaluator: Evaluator, *, reload: bool = True) -> None:
    """Serialize one evaluator's requests (two tabs) and reload its row.

    PostgreSQL: SELECT ... FOR UPDATE on the evaluator row, once per transaction; SQLite: BEGIN
    IMMEDIATE already serializes writers, the row is only reloaded (unless `reload` is False:
    the caller does not depend on a fresh completed_at). Every write path takes it first, so an
    evaluator's trials change under its lock.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    transaction = session.get_transaction()
    locked = session.info.setdefault("locked_evaluators", {})
    if (locked.get(evaluator.id) is transaction and transaction is not None) or not (
        postgres or reload
    ):
        return
    session.refresh(evaluator, with_for_update=postgres or None)
    locked[evaluator.id] = session.get_transaction()


def peek_current(
    *, session: Session, study: Study, evaluator: Evaluator, state: _State | None = None
) -> NextResult | None:
    """`current_trial` when it needs no write (read session): the current trial when it is
    already shown, done, or waiting for pairs still rendering; None when a trial must be marked
    shown or assigned, or the evaluator finished."""
    check_open(study)
    state = state or _state(session, evaluator)
    if evaluator.completed_at is not None:
        return _done(session, study=study, evaluator=evaluator, state=state)
    if state.open:
        if state.open[0].shown_at is not None:
            return _trial_result(session, study=study, state=state, trial=state.open[0])
        return None
    if study.stopped_at is not None:
        return None  # the write path completes the evaluator
    return _peek_waiting(session, study=study, state=state)


_READY_MATCHUPS = matchups.ready(select(func.count(Matchup.id))).where(
    Matchup.study_id == bindparam("study_id")
)


def _peek_waiting(session: Session, *, study: Study, state: _State) -> NextResult | None:
    """`waiting` from a read session when a write could assign nothing now, so an evaluator
    whose next pair is still rendering asks again without taking the write lock. None when a
    write might assign (a ready candidate, a repeat due, matchups to make) or finish them."""
    plan = _plan(session, study)
    if (
        state.total >= sum(plan)
        or state.fresh >= plan[0]
        or _repeat_due(state, plan)
        or _gold_due(study, state, plan)
    ):
        return None
    if _run(session, _CANDIDATE, _candidate_params(study, state)).first() is not None:
        return None
    made = _run(session, _READY_MATCHUPS, {"study_id": study.id}).scalar_one()
    if count_ready_matchups(session=session, study=study) > made:
        return None  # clips done whose matchups are not made yet
    return _waiting(state, plan)


def current_trial(
    *, session: Session, study: Study, evaluator: Evaluator, now: datetime | None = None
) -> NextResult:
    """The evaluator's current trial, assigning one when none is open; marks it shown.

    Calling it again (a reload, a second tab) returns the same trial until it is answered.
    """
    check_open(study)
    now = now or utcnow()
    _lock_evaluator(session, evaluator)
    state = _state(session, evaluator)
    if evaluator.completed_at is not None:
        return _done(session, study=study, evaluator=evaluator, state=state)
    if state.open and (state.open[0].shown_at is not None or study.stopped_at is None):
        current = state.open[0]
        if current.shown_at is None:
            current.shown_at = now  # the prefetched trial becomes the current one
            session.flush()
        return _trial_result(session, study=study, state=state, trial=current)
    if study.stopped_at is not None:
        # The study stopped: a pair on screen is finished (above); the one assigned ahead is
        # never shown, and the evaluator is done, with their completion code.
        _complete(session, study=study, evaluator=evaluator, state=state, now=now)
        return _done(session, study=study, evaluator=evaluator, state=state)
    plan = _plan(session, study)
    trial, reason = _assign(
        session, study=study, evaluator=evaluator, state=state, now=now, shown=True, plan=plan
    )
    if trial is not None:
        return _trial_result(session, study=study, state=state, trial=trial, plan=plan)
    if reason == "wait":
        return _waiting(state, plan)
    if state.answered == 0:  # nothing rendered, queued or rendering: an admin must act
        return NextResult(
            status="unavailable",
            progress=_progress(state, plan),
            message="No pairs are ready to rate yet. Please come back a little later.",
        )
    _complete(session, study=study, evaluator=evaluator, state=state, now=now)
    return _done(session, study=study, evaluator=evaluator, state=state)  # re-planned, maybe


# How soon a waiting evaluator's page asks again (clips of a pair finish seconds apart on a GPU).
WAIT_RETRY_SECONDS = 5.0


def _waiting(state: _State, plan: Plan) -> NextResult:
    return NextResult(
        status="waiting",
        progress=_progress(state, plan),
        retry_after=WAIT_RETRY_SECONDS,
        message="More pairs are being prepared. Please keep this page open: it carries on by "
        "itself as soon as the next pair is ready.",
    )


def evaluator_state(*, session: Session, evaluator: Evaluator) -> _State:
    """The evaluator's trials, for `peek_after` / `trial_after(known=)` / `check_submission`."""
    return _state(session, evaluator)


def _unchanged(session: Session, evaluator: Evaluator, known: _State) -> bool:
    """Whether the evaluator's trials are still those of `known` (none added or answered)."""
    row = _run(session, _TRIAL_COUNTS, {"evaluator_id": evaluator.id}).one()
    return tuple(row) == (known.total, known.last_position, known.answered)


_TRIAL_COUNTS = select(
    func.count(Trial.id), func.coalesce(func.max(Trial.position), 0), func.count(Trial.answered_at)
).where(Trial.evaluator_id == bindparam("evaluator_id"))


def peek_after(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    trial_id: int,
    state: _State | None = None,
) -> NextResult | None:
    """`trial_after` when it needs no write (read session): the trial already assigned after
    `trial_id`, or done; None when one must be assigned."""
    check_open(study)
    state = state or _state(session, evaluator)
    trial = state.own(trial_id)
    if evaluator.completed_at is not None:
        return _done(session, study=study, evaluator=evaluator, state=state)
    later = [t for t in state.open if t.position > trial.position]
    if trial.answered_at is None and later:
        return _trial_result(session, study=study, state=state, trial=later[0])
    return None


def trial_after(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    trial_id: int,
    now: datetime | None = None,
    known: _State | None = None,
) -> NextResult:
    """The trial that follows `trial_id`, assigned ahead of time so its clips can be prefetched.

    It is not marked shown. Asking again returns the same trial; at most one trial is assigned
    ahead of the current one. Once `trial_id` is answered this is `current_trial`. `known`: the
    evaluator's state read before (by `peek_after`), used if its trials have not changed since.
    """
    check_open(study)
    now = now or utcnow()
    # A stale completed_at is harmless here: a finished evaluator gets no trial either way.
    _lock_evaluator(session, evaluator, reload=False)
    if known is None or not _unchanged(session, evaluator, known):
        known = _state(session, evaluator)
    state = known
    trial = state.own(trial_id)
    if evaluator.completed_at is not None:
        return _done(session, study=study, evaluator=evaluator, state=state)
    if trial.answered_at is not None:
        return current_trial(session=session, study=study, evaluator=evaluator, now=now)
    later = [t for t in state.open if t.position > trial.position]
    if later:
        return _trial_result(session, study=study, state=state, trial=later[0])
    plan = _plan(session, study)
    if state.open[0].id != trial.id or trial.position != state.last_position:
        # Only one trial is assigned ahead of the current one.
        return NextResult(
            status="unavailable",
            progress=_progress(state, plan),
            message="The next pair is not assigned yet.",
        )
    result_trial, reason = _assign(
        session, study=study, evaluator=evaluator, state=state, now=now, shown=False, plan=plan
    )
    if result_trial is not None:
        return _trial_result(session, study=study, state=state, trial=result_trial, plan=plan)
    if reason == "wait":
        return _waiting(state, plan)
    return NextResult(
        status="done",
        progress=_progress(state, _plan(session, study)),  # re-planned, maybe
        message="This is the last pair.",
    )


# --- votes ------------------------------------------------------------------------------------


def _check_votes(study: Study, votes: dict[str, str]) -> dict[str, Choice]:
    keys = study.criterion_keys
    unknown = sorted(set(votes) - set(keys))
    missing = [k for k in keys if k not in votes]
    problems = []
    if unknown:
        # Said back short: the request's own keys could be a 64 KB body.
        named = [k if len(k) <= 40 else k[:39] + "…" for k in unknown[:5]]
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        problems.append(f"unknown criteria {named}{more}")
    if missing:
        problems.append(f"missing answers for {missing}")
    checked: dict[str, Choice] = {}
    for key, value in votes.items():
        try:
            checked[key] = Choice(value)
        except ValueError:
            problems.append(f"{key}: {value!r} is not one of left, right, tie")
    if problems:
        raise VoteValidationError(
            "Answer every criterion of the study with left, right or tie, and nothing else: "
            + "; ".join(problems)
            + ". Nothing was stored."
        )
    return {k: checked[k] for k in keys}


@dataclass
class Submission:
    """A checked answer to a trial, ready to store: `check_submission` reads (a read session
    will do), `store_submission` writes, so the write transaction holds only the writes."""

    trial: Trial
    votes: dict[str, Choice]
    values: dict[str, object]  # the trial's columns to set: answered_at, flags, client timing
    state: _State  # the evaluator's trials when checked
    stored: SubmitResult | None = None  # this very answer was stored already


def check_submission(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    trial_id: int,
    votes: dict[str, str],
    timing: ClientTiming | None = None,
    watch: WatchIn | None = None,
    now: datetime | None = None,
    state: _State | None = None,
) -> Submission:
    """Everything an answer is checked for, without writing (`flow.submit` runs it, then
    `store_submission`): raises RatingError for a refused answer; `stored` is set when the same
    answer is already stored (a repeat or double click).

    `timing`: the client's own load and view times; the viewing time that the minimum viewing
    time and the fast flag judge is the client's when given (checked against the server's, which
    includes queueing and network), else the server's. `watch`: the page's watch telemetry
    (app/rating/watch.py), stored as loops and judged by the study's `min_loops`."""
    now = now or utcnow()
    if study.status == StudyStatus.closed:
        check_open(study)
    state = state or _state(session, evaluator)
    trial = state.own(trial_id)
    checked = _check_votes(study, votes)
    if trial.answered_at is not None:
        stored = {v.criterion: v.choice for v in trial.votes}
        if stored == checked:
            result = SubmitResult(trial=trial, votes=stored, created=False)
            return Submission(trial=trial, votes=stored, values={}, state=state, stored=result)
        raise VoteConflictError(
            "This pair was already answered differently (perhaps in another tab); the first "
            "answer stands and nothing was changed."
        )
    check_open(study)
    if trial.shown_at is None:
        raise NotCurrentError("This pair is not shown yet: answer the current pair first.")
    spec = rating_spec(study)
    elapsed = _viewing_seconds(timing, server=(now - trial.shown_at).total_seconds())
    if elapsed < spec.min_view_seconds:
        wait = math.ceil(spec.min_view_seconds - elapsed)
        raise TooEarlyError(
            f"Please watch both clips a little longer ({wait} s) before answering. "
            "Nothing was stored."
        )
    reasons = []
    if spec.fast_trial_seconds and elapsed < spec.fast_trial_seconds:
        reasons.append(
            f"fast: answered {elapsed:.1f} s after shown (< {spec.fast_trial_seconds:g} s)"
        )
    if trial.is_repeat:
        reasons.extend(_repeat_consistency(session, trial=trial, votes=checked))
    watched, watch_reasons = check_watch(
        session,
        watch=watch,
        clips=state.clip_sides(trial),
        elapsed=(now - trial.shown_at).total_seconds(),
        min_loops=spec.min_loops,
    )
    reasons.extend(watch_reasons)
    values: dict[str, object] = {
        "answered_at": now,
        "flagged": bool(reasons),
        "flag_reason": "; ".join(reasons)[:200] if reasons else None,
        "client_load_seconds": timing.load_seconds if timing else None,
        "client_view_seconds": timing.view_seconds if timing else None,
        **watched,
    }
    return Submission(trial=trial, votes=checked, values=values, state=state)


# The client's clock may run this much faster than the server's (a fraction), plus the two
# timestamps' resolution; anything beyond cannot have happened between shown and answered.
_CLOCK_DRIFT = 0.001
_CLOCK_SLACK = 0.05


def _viewing_seconds(timing: ClientTiming | None, *, server: float) -> float:
    """The viewing time to judge: the client's when given and possible, the server's without.

    The page receives the pair after the server marked it shown and answers before the server
    receives the answer, so the client's load + view cannot exceed the server's elapsed time."""
    if timing is None:
        return server
    reported = timing.load_seconds + timing.view_seconds
    if reported > server * (1 + _CLOCK_DRIFT) + _CLOCK_SLACK:
        raise TimingError(
            f"The reported timing (load {timing.load_seconds:.3f} s + view "
            f"{timing.view_seconds:.3f} s) is longer than the {server:.3f} s between the pair "
            "being shown and this answer arriving, so it cannot be right. Measure both on a "
            "monotonic clock from when the pair arrived as the current one. Nothing was stored."
        )
    return timing.view_seconds


# Conditional: of two concurrent submits one stores; RETURNING sees a release that committed
# meanwhile (PostgreSQL), so the counters stay exact.
_ANSWER = (
    update(_TRIAL)
    .where(_TRIAL.c.id == bindparam("trial_id"), _TRIAL.c.answered_at.is_(None))
    .values(
        answered_at=bindparam("answered_at"),
        flagged=bindparam("flagged"),
        flag_reason=bindparam("flag_reason"),
        client_load_seconds=bindparam("client_load_seconds"),
        client_view_seconds=bindparam("client_view_seconds"),
        loops_left=bindparam("loops_left"),
        loops_right=bindparam("loops_right"),
        watched_both=bindparam("watched_both"),
        hidden_seconds=bindparam("hidden_seconds"),
    )
    .returning(_TRIAL.c.released_at)
)
_INSERT_VOTES = insert(_table(Vote))
_SHOW = (
    update(_TRIAL)
    .where(_TRIAL.c.id == bindparam("trial_id"), _TRIAL.c.answered_at.is_(None))
    .values(shown_at=func.coalesce(_TRIAL.c.shown_at, bindparam("now")))
    .returning(_TRIAL.c.shown_at)
)


def store_submission(
    *, session: Session, study: Study, evaluator: Evaluator, submission: Submission
) -> SubmitResult:
    """Store a checked answer: the trial's UPDATE (only if still unanswered) and the votes.
    If the trial was answered meanwhile (a double click), answers as a repeat submit would."""
    if submission.stored is not None:
        return submission.stored
    # The evaluator's lock before any of its trial rows (PostgreSQL), as every write path takes
    # them: assigning the pair after next takes it anyway, and the reverse order could deadlock
    # with a second tab whose assignment updates this evaluator's trials.
    _lock_evaluator(session, evaluator, reload=False)
    trial, values = submission.trial, submission.values
    row = _run(session, _ANSWER, {"trial_id": trial.id, **values}).first()
    if row is None:
        again = check_submission(
            session=session,
            study=study,
            evaluator=evaluator,
            trial_id=trial.id,
            votes={k: c.value for k, c in submission.votes.items()},
        )
        if again.stored is None:  # pragma: no cover - it was answered, so it is stored
            raise VoteConflictError("This pair was answered meanwhile; nothing was changed.")
        return again.stored
    if row.released_at is not None and not trial.is_repeat and trial.matchup_id is not None:
        # It counts again. The one matchup row this transaction waits for, before any other
        # (see "Concurrency"), so it cannot deadlock.
        _count(session, [(trial.matchup_id, 1, int(trial.a_on_left), 0)])
    _run(
        session,
        _INSERT_VOTES,
        [{"trial_id": trial.id, "criterion": k, "choice": c} for k, c in submission.votes.items()],
    )
    count_on_commit(session, votes=len(submission.votes), answered=1)
    for name, value in (values | {"released_at": row.released_at}).items():
        set_committed_value(trial, name, value)  # what the UPDATE stored, without a reload
    return SubmitResult(trial=trial, votes=submission.votes, created=True)


def next_after_submit(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    submission: Submission,
    now: datetime | None = None,
) -> NextResult:
    """The pair to show once `submission` is stored: the one assigned ahead (prefetched), now
    marked shown with one UPDATE, otherwise whatever `current_trial` says; and the pair after
    it, assigned ahead (as `trial_after` would), so the answer carries both and the browser
    needs no prefetch request."""
    now = now or utcnow()
    state = submission.state
    ahead = [t for t in state.open if t.position > submission.trial.position]
    result = None
    known: _State | None = state  # the trials the result was read from, for the pair after
    if ahead and evaluator.completed_at is None and study.stopped_at is None:
        shown = _run(session, _SHOW, {"trial_id": ahead[0].id, "now": now}).first()
        if shown is not None:
            set_committed_value(ahead[0], "shown_at", shown.shown_at)
            result = _trial_result(session, study=study, state=state, trial=ahead[0])
    if result is None:
        result = current_trial(session=session, study=study, evaluator=evaluator, now=now)
        known = None  # current_trial read the trials afresh
    return with_following(
        session=session, study=study, evaluator=evaluator, result=result, now=now, known=known
    )


def with_following(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    result: NextResult,
    now: datetime | None = None,
    known: _State | None = None,
) -> NextResult:
    """`result` with the pair after its trial (`after`), assigned ahead in this transaction as
    `trial_after` would, so the browser needs no prefetch request for it."""
    if result.trial is None:
        return result
    following = trial_after(
        session=session,
        study=study,
        evaluator=evaluator,
        trial_id=result.trial.id,
        now=now,
        known=known,
    )
    return _attach(result, following)


def peek_following(
    *, session: Session, study: Study, evaluator: Evaluator, result: NextResult, state: _State
) -> NextResult:
    """`with_following` without a write (read session): `after` only when already assigned."""
    if result.trial is None:
        return result
    following = peek_after(
        session=session, study=study, evaluator=evaluator, trial_id=result.trial.id, state=state
    )
    return _attach(result, following)


def _attach(result: NextResult, following: NextResult | None) -> NextResult:
    if following is None or following.status != "trial":
        return result
    return replace(
        result,
        after=following.trial,
        after_prompt=following.prompt,
        after_clips=following.clips,
    )


def _repeat_consistency(session: Session, *, trial: Trial, votes: dict[str, Choice]) -> list[str]:
    """A flag reason when a repeat (sides swapped) disagrees with its original trial."""
    original = session.scalar(
        select(Trial).where(
            Trial.evaluator_id == trial.evaluator_id,
            Trial.matchup_id == trial.matchup_id,
            Trial.is_repeat == false(),
        )
    )
    if original is None or original.answered_at is None:
        return []
    before = {v.criterion: vote_view.chosen(v.choice, original.a_on_left) for v in original.votes}
    differ = [k for k, c in votes.items() if before.get(k) != vote_view.chosen(c, trial.a_on_left)]
    if not differ:
        return []
    return [
        f"inconsistent repeat: {len(differ)} of {len(votes)} criteria differ from trial "
        f"{original.id} ({', '.join(differ)})"
    ]


# --- media ------------------------------------------------------------------------------------
