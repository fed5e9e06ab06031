"""Rating use cases: matchups, evaluators, assignment, votes. Keyword-only, callers commit.

Assignment. An evaluator has at most two unanswered trials: the *current* one (lowest position,
`shown_at` set) and one assigned ahead so the browser can prefetch its clips (`shown_at` NULL until
it becomes current). A new trial takes, among the study's ready matchups (both clips done) this
evaluator has not judged, one with the fewest live trials (answered, or assigned within
ASSIGNMENT_HOLD); ties go to a prompt other than the evaluator's previous one, then to the
matchup the most still-rating evaluators have already judged (the hardest to fill later), then
to a prompt this evaluator has seen least, then at random. Sides are counterbalanced per
matchup: clip A goes left when it has been left less often than right in the matchup's live
trials, at random when equal, so left/right never differ by more than one. Repeats (quality
control) re-show an answered matchup with the sides swapped, spread through the session.

Concurrency. Every request that may assign first locks its evaluator (PostgreSQL: the evaluator
row FOR UPDATE), so two tabs get the same trial; only when a new trial must be chosen does it
also take the study's lock (PostgreSQL: a transaction-scoped advisory lock), always in that
order, so coverage and side counts are read and written by one assigner at a time. On SQLite
write transactions begin IMMEDIATE, which serializes all of it. Unique constraints are the
backstop: (evaluator, position) and (evaluator, matchup, is_repeat) for trials, (trial,
criterion) for votes, (study, invite) and (study, external id) for evaluators.
"""

from __future__ import annotations

import math
import random
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from typing import Literal

from sqlalchemy import case, false, func, insert, select, true
from sqlalchemy.orm import Session, aliased

from app.clips.models import Clip, ClipStatus
from app.db import utcnow
from app.rating import tokens
from app.rating.models import Choice, Evaluator, Matchup, Trial, Vote
from app.studies.models import Prompt, Study, StudyStatus
from app.studies.studyfile import RatingSpec

# An unanswered trial counts towards its matchup's coverage this long; after that the matchup
# may be given to others (the trial stays its evaluator's, should they come back).
ASSIGNMENT_HOLD = timedelta(minutes=30)
# Class id of the PostgreSQL advisory lock that serializes assignment within a study.
_ADVISORY_CLASS = 0x76A1  # "va"
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
_EXTERNAL_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces


# --- errors -----------------------------------------------------------------------------------


class RatingError(Exception):
    """A request the rating flow refuses; `status_code` and `code` say how to answer it."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class StudyNotOpenError(RatingError):
    status_code = 403
    code = "study_not_open"


class StudyClosedError(RatingError):
    status_code = 409
    code = "study_closed"


class EnrollmentError(RatingError):
    status_code = 403
    code = "invite_required"


class NotAnEvaluatorError(RatingError):
    status_code = 401
    code = "not_joined"


class TrialNotFoundError(RatingError):
    status_code = 404
    code = "trial_not_found"


class VoteValidationError(RatingError):
    status_code = 422
    code = "invalid_votes"


class VoteConflictError(RatingError):
    status_code = 409
    code = "already_answered"


class NotCurrentError(RatingError):
    status_code = 409
    code = "not_current"


class TooEarlyError(RatingError):
    status_code = 409
    code = "too_early"


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    answered: int
    total: int


@dataclass(frozen=True)
class NextResult:
    status: Literal["trial", "done", "unavailable"]
    progress: Progress
    trial: Trial | None = None
    completion_code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class JoinResult:
    evaluator: Evaluator
    resumed: bool


@dataclass(frozen=True)
class SubmitResult:
    trial: Trial
    votes: dict[str, Choice]
    created: bool


# --- study access -----------------------------------------------------------------------------


def rating_spec(study: Study) -> RatingSpec:
    return RatingSpec.model_validate(study.settings or {})


def check_open(study: Study) -> None:
    """Only open studies take evaluators, trials and votes."""
    if study.status == StudyStatus.open:
        return
    if study.status == StudyStatus.closed:
        raise StudyClosedError("This study has closed and no longer takes answers. Thank you!")
    raise StudyNotOpenError("This study is not open yet. Please try again later.")


def study_link(*, secret: str, study: Study, base_url: str = "") -> str:
    return f"{base_url.rstrip('/')}/r/{tokens.study_key(secret, study.id)}"


def get_study_by_key(*, session: Session, secret: str, key: str) -> Study | None:
    study_id = tokens.parse_study_key(secret, key)
    return session.get(Study, study_id) if study_id is not None else None


def _lock_study(session: Session, study_id: int) -> None:
    """Serialize assignment within a study (SQLite: BEGIN IMMEDIATE already did)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_ADVISORY_CLASS, study_id)))


# --- matchups ---------------------------------------------------------------------------------


def ensure_matchups(
    *, session: Session, study: Study | int, prompt_ids: list[int] | None = None
) -> int:
    """Create the missing matchups of a study: every pair of arms of every prompt whose two
    clips are both `done`. Idempotent and cheap (two queries and one INSERT of what is missing);
    safe to call concurrently (conflicting inserts are skipped). Returns how many were created.

    Render workers call it after a clip turns done, with `prompt_ids=[clip.prompt_id]`; the web
    app calls it when an evaluator joins. A matchup whose clip later stops being done (re-render)
    stays, but is not assigned until both clips are done again.
    """
    study_id = study if isinstance(study, int) else study.id
    query = (
        select(Clip.id, Clip.prompt_id, Clip.arm_id)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study_id, Clip.status == ClipStatus.done)
        .order_by(Clip.prompt_id, Clip.arm_id)
    )
    existing_query = select(Matchup.clip_a_id, Matchup.clip_b_id).where(
        Matchup.study_id == study_id
    )
    if prompt_ids is not None:
        query = query.where(Clip.prompt_id.in_(prompt_ids))
        existing_query = existing_query.where(Matchup.prompt_id.in_(prompt_ids))
    by_prompt: dict[int, list[tuple[int, int]]] = {}
    for clip_id, prompt_id, arm_id in session.execute(query):
        by_prompt.setdefault(prompt_id, []).append((arm_id, clip_id))
    existing = {(a, b) for a, b in session.execute(existing_query)}
    now = utcnow()
    rows = [
        {
            "study_id": study_id,
            "prompt_id": prompt_id,
            "clip_a_id": clip_a,
            "clip_b_id": clip_b,
            "arm_a_id": arm_a,
            "arm_b_id": arm_b,
            "created_at": now,
        }
        for prompt_id, clips in by_prompt.items()
        for (arm_a, clip_a), (arm_b, clip_b) in combinations(sorted(clips), 2)
        if (clip_a, clip_b) not in existing
    ]
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # pragma: no cover - we support SQLite and PostgreSQL
        session.execute(insert(Matchup), rows)
        return len(rows)
    statement = dialect_insert(Matchup).on_conflict_do_nothing(
        index_elements=["clip_a_id", "clip_b_id"]
    )
    result = session.execute(statement.returning(Matchup.id), rows)
    return len(result.all())


def ensure_matchups_for_prompt(*, session: Session, clip_id: int) -> int:
    """`ensure_matchups` for the prompt of one clip (what a render worker calls once the clip is
    done, in the transaction that marks it done). Returns how many matchups were created."""
    row = session.execute(
        select(Prompt.study_id, Prompt.id)
        .join(Clip, Clip.prompt_id == Prompt.id)
        .where(Clip.id == clip_id)
    ).first()
    if row is None:
        return 0
    return ensure_matchups(session=session, study=row.study_id, prompt_ids=[row.id])


_CLIP_A = aliased(Clip, name="clip_a")
_CLIP_B = aliased(Clip, name="clip_b")


def _ready_matchups(study_id: int):  # type: ignore[no-untyped-def]
    """Matchups of the study whose two clips are done (a select of Matchup.id, prompt_id)."""
    return (
        select(Matchup.id, Matchup.prompt_id)
        .join(_CLIP_A, _CLIP_A.id == Matchup.clip_a_id)
        .join(_CLIP_B, _CLIP_B.id == Matchup.clip_b_id)
        .where(
            Matchup.study_id == study_id,
            _CLIP_A.status == ClipStatus.done,
            _CLIP_B.status == ClipStatus.done,
        )
    )


def count_ready_matchups(*, session: Session, study: Study) -> int:
    return session.scalar(select(func.count()).select_from(_ready_matchups(study.id).subquery()))


# --- evaluators -------------------------------------------------------------------------------


def new_invites(*, secret: str, study: Study, count: int, base_url: str = "") -> list[str]:
    """`count` personal invite links (stateless: each becomes an evaluator when first used)."""
    if not 1 <= count <= 10_000:
        raise ValueError(f"count must be 1..10000, got {count}")
    link = study_link(secret=secret, study=study, base_url=base_url)
    return [f"{link}?invite={tokens.new_invite(secret, study.id)[0]}" for _ in range(count)]


def clean_external_id(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not _EXTERNAL_ID.fullmatch(value):
        raise EnrollmentError(
            "The participant id in this link is not valid (1-200 printable characters, no "
            "spaces). Please use the link exactly as your platform gave it.",
            code="invalid_external_id",
        )
    return value


def check_invite(*, secret: str, study: Study, invite: str | None) -> str | None:
    """The nonce of a valid invite, None when there is none; raises for a forged one."""
    if not invite:
        return None
    nonce = tokens.parse_invite(secret, invite, study.id)
    if nonce is None:
        raise EnrollmentError(
            "This invite link is not valid. Please check that you copied all of it.",
            code="invalid_invite",
        )
    return nonce


def evaluator_from_token(*, session: Session, secret: str, study: Study, token: str | None):
    """The evaluator a cookie or bearer token names, or None (missing, forged, other study)."""
    if not token:
        return None
    public_id = tokens.parse_evaluator_token(secret, token, study.id)
    if public_id is None:
        return None
    return session.scalar(
        select(Evaluator).where(Evaluator.public_id == public_id, Evaluator.study_id == study.id)
    )


def join(
    *,
    session: Session,
    secret: str,
    study: Study,
    invite: str | None = None,
    external_id: str | None = None,
    current: Evaluator | None = None,
) -> JoinResult:
    """Enroll or resume an evaluator.

    - an external id (e.g. a Prolific PID) is one evaluator: needs open enrollment or an invite;
    - otherwise an invite's nonce is one evaluator;
    - otherwise the evaluator of the cookie resumes;
    - otherwise, with open enrollment, a new anonymous evaluator.
    """
    check_open(study)
    spec = rating_spec(study)
    nonce = check_invite(secret=secret, study=study, invite=invite)
    external_id = clean_external_id(external_id)
    _lock_study(session, study.id)
    existing: Evaluator | None = None
    if external_id is not None:
        if nonce is None and not spec.open_enrollment:
            raise EnrollmentError(
                "This study is by invitation only: please use the invite link you were given."
            )
        existing = session.scalar(
            select(Evaluator).where(
                Evaluator.study_id == study.id, Evaluator.external_id == external_id
            )
        )
        nonce = None  # the participant id is the identity; one invite may serve many of them
    elif nonce is not None:
        existing = session.scalar(
            select(Evaluator).where(Evaluator.study_id == study.id, Evaluator.invite == nonce)
        )
    elif current is not None and current.study_id == study.id:
        existing = current
    elif not spec.open_enrollment:
        raise EnrollmentError(
            "This study is by invitation only: please use the invite link you were given."
        )
    if existing is not None:
        return JoinResult(evaluator=existing, resumed=True)
    evaluator = Evaluator(
        study_id=study.id,
        public_id=secrets.token_urlsafe(16),
        external_id=external_id,
        invite=nonce,
    )
    session.add(evaluator)
    session.flush()
    ensure_matchups(session=session, study=study)
    return JoinResult(evaluator=evaluator, resumed=False)


# --- assignment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stats:
    total: int  # trials assigned to this evaluator (answered or not)
    fresh: int
    repeats: int
    answered: int
    last_position: int
    last_prompt_id: int | None


def _stats(session: Session, evaluator: Evaluator) -> _Stats:
    total, repeats, answered, last_position = session.execute(
        select(
            func.count(Trial.id),
            func.coalesce(func.sum(case((Trial.is_repeat, 1), else_=0)), 0),
            func.count(Trial.answered_at),
            func.coalesce(func.max(Trial.position), 0),
        ).where(Trial.evaluator_id == evaluator.id)
    ).one()
    last_prompt_id = None
    if last_position:
        last_prompt_id = session.scalar(
            select(Matchup.prompt_id)
            .join(Trial, Trial.matchup_id == Matchup.id)
            .where(Trial.evaluator_id == evaluator.id, Trial.position == last_position)
        )
    return _Stats(
        total=total,
        fresh=total - repeats,
        repeats=repeats,
        answered=answered,
        last_position=last_position,
        last_prompt_id=last_prompt_id,
    )


def count_ready_pairs(*, session: Session, study: Study) -> int:
    """Pairs of done clips per prompt: the ready matchups once `ensure_matchups` has run (counted
    from the clips, so it is right even before it has)."""
    per_prompt = (
        select(func.count(Clip.id).label("k"))
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study.id, Clip.status == ClipStatus.done)
        .group_by(Clip.prompt_id)
        .subquery()
    )
    pairs = session.scalar(select(func.sum(per_prompt.c.k * (per_prompt.c.k - 1) / 2)))
    return int(pairs or 0)


def _plan(session: Session, study: Study) -> tuple[int, int]:
    """(fresh trials, repeats) an evaluator of this study gets: the quota (or every ready
    pair) and the study's repeats, bounded by what exists."""
    spec = rating_spec(study)
    ready = count_ready_pairs(session=session, study=study)
    fresh = min(spec.trials_per_evaluator, ready) if spec.trials_per_evaluator else ready
    return fresh, min(spec.repeat_trials, fresh)


def planned_total(*, session: Session, study: Study) -> int:
    """Trials an evaluator of this study will answer in all (fresh plus repeats)."""
    fresh, repeats = _plan(session, study)
    return fresh + repeats


def progress(
    *, session: Session, study: Study, evaluator: Evaluator, plan: tuple[int, int] | None = None
) -> Progress:
    stats = _stats(session, evaluator)
    fresh, repeats = plan or _plan(session, study)
    return Progress(answered=stats.answered, total=max(fresh + repeats, stats.total))


def _live(now: datetime):  # type: ignore[no-untyped-def]
    """Trials that count towards coverage: answered, or assigned recently."""
    return (Trial.answered_at.is_not(None)) | (Trial.assigned_at > now - ASSIGNMENT_HOLD)


def _new_trial(
    session: Session,
    *,
    evaluator: Evaluator,
    stats: _Stats,
    matchup_id: int,
    a_on_left: bool,
    is_repeat: bool,
    now: datetime,
    shown: bool,
) -> Trial:
    trial = Trial(
        evaluator_id=evaluator.id,
        matchup_id=matchup_id,
        position=stats.last_position + 1,
        a_on_left=a_on_left,
        is_repeat=is_repeat,
        assigned_at=now,
        shown_at=now if shown else None,
    )
    session.add(trial)
    session.flush()
    return trial


def _assign_fresh(
    session: Session,
    *,
    study: Study,
    evaluator: Evaluator,
    stats: _Stats,
    now: datetime,
    shown: bool,
    fresh_total: int,
) -> Trial | None:
    loads = (
        select(Trial.matchup_id, func.count(Trial.id).label("n"))
        .join(Matchup, Matchup.id == Trial.matchup_id)
        .where(Matchup.study_id == study.id, Trial.is_repeat == false(), _live(now))
        .group_by(Trial.matchup_id)
        .subquery()
    )
    # Among equally covered matchups, first those judged by the most evaluators who still have
    # trials to come: they cannot take it later, so it is the hardest to fill (in simulations
    # this keeps max - min coverage at 1 where a plain random tie-break often ends at 2).
    still_rating = (
        select(Trial.evaluator_id)
        .join(Evaluator, Evaluator.id == Trial.evaluator_id)
        .where(
            Evaluator.study_id == study.id,
            Evaluator.completed_at.is_(None),
            Evaluator.id != evaluator.id,
            Trial.is_repeat == false(),
        )
        .group_by(Trial.evaluator_id)
        .having(func.count(Trial.id) < fresh_total)
    )
    constrained = (
        select(Trial.matchup_id, func.count(Trial.id).label("n"))
        .where(Trial.evaluator_id.in_(still_rating), Trial.is_repeat == false())
        .group_by(Trial.matchup_id)
        .subquery()
    )
    # With more than two arms a prompt has several matchups: spread them over the session.
    seen_prompts = (
        select(Matchup.prompt_id, func.count(Trial.id).label("n"))
        .join(Trial, Trial.matchup_id == Matchup.id)
        .where(Trial.evaluator_id == evaluator.id)
        .group_by(Matchup.prompt_id)
        .subquery()
    )
    judged = select(Trial.matchup_id).where(Trial.evaluator_id == evaluator.id)
    ready = _ready_matchups(study.id).subquery()
    same_prompt = case((ready.c.prompt_id == (stats.last_prompt_id or -1), 1), else_=0)
    matchup_id = session.scalar(
        select(ready.c.id)
        .outerjoin(loads, loads.c.matchup_id == ready.c.id)
        .outerjoin(constrained, constrained.c.matchup_id == ready.c.id)
        .outerjoin(seen_prompts, seen_prompts.c.prompt_id == ready.c.prompt_id)
        .where(ready.c.id.not_in(judged))
        .order_by(
            func.coalesce(loads.c.n, 0),
            same_prompt,
            func.coalesce(constrained.c.n, 0).desc(),
            func.coalesce(seen_prompts.c.n, 0),
            func.random(),
        )
        .limit(1)
    )
    if matchup_id is None:
        return None
    # Counterbalance: A goes to the side it has been on less often in this matchup's live trials.
    shown_total, a_left = session.execute(
        select(
            func.count(Trial.id), func.coalesce(func.sum(case((Trial.a_on_left, 1), else_=0)), 0)
        ).where(Trial.matchup_id == matchup_id, Trial.is_repeat == false(), _live(now))
    ).one()
    a_right = shown_total - a_left
    a_on_left = a_left < a_right or (a_left == a_right and random.random() < 0.5)
    return _new_trial(
        session,
        evaluator=evaluator,
        stats=stats,
        matchup_id=matchup_id,
        a_on_left=a_on_left,
        is_repeat=False,
        now=now,
        shown=shown,
    )


def _assign_repeat(
    session: Session, *, evaluator: Evaluator, stats: _Stats, now: datetime, shown: bool
) -> Trial | None:
    """Repeat one of the evaluator's answered matchups with the sides swapped."""
    repeated = select(Trial.matchup_id).where(
        Trial.evaluator_id == evaluator.id, Trial.is_repeat == true()
    )
    same_prompt = case((Matchup.prompt_id == (stats.last_prompt_id or -1), 1), else_=0)
    original = session.execute(
        select(Trial.matchup_id, Trial.a_on_left)
        .join(Matchup, Matchup.id == Trial.matchup_id)
        .where(
            Trial.evaluator_id == evaluator.id,
            Trial.is_repeat == false(),
            Trial.answered_at.is_not(None),
            Trial.matchup_id.not_in(repeated),
            Trial.matchup_id.in_(select(_ready_matchups(evaluator.study_id).subquery().c.id)),
        )
        .order_by(same_prompt, func.random())
        .limit(1)
    ).first()
    if original is None:
        return None
    return _new_trial(
        session,
        evaluator=evaluator,
        stats=stats,
        matchup_id=original.matchup_id,
        a_on_left=not original.a_on_left,
        is_repeat=True,
        now=now,
        shown=shown,
    )


def _assign(
    session: Session,
    *,
    study: Study,
    evaluator: Evaluator,
    now: datetime,
    shown: bool,
    plan: tuple[int, int],
) -> tuple[Trial | None, Literal["quota", "exhausted", "wait"] | None]:
    stats = _stats(session, evaluator)
    fresh_total, repeat_total = plan
    if stats.total >= fresh_total + repeat_total:
        return None, "quota"
    # Repeats are spread through the session: repeat k is due after k/(R+1) of the fresh trials.
    due = stats.repeats < repeat_total and (
        stats.fresh >= fresh_total
        or stats.fresh >= math.ceil(fresh_total * (stats.repeats + 1) / (repeat_total + 1))
    )
    if due:
        trial = _assign_repeat(session, evaluator=evaluator, stats=stats, now=now, shown=shown)
        if trial is not None:
            return trial, None
        if stats.fresh >= fresh_total:
            return None, "wait"  # the originals are not answered yet
    if stats.fresh < fresh_total:
        for attempt in range(2):
            trial = _assign_fresh(
                session,
                study=study,
                evaluator=evaluator,
                stats=stats,
                now=now,
                shown=shown,
                fresh_total=fresh_total,
            )
            if trial is not None:
                return trial, None
            # Clips done (or imported) whose matchups were not made yet: make them, try again.
            if attempt or not ensure_matchups(session=session, study=study):
                break
    return None, "exhausted"


def _open_trials(session: Session, evaluator: Evaluator) -> list[Trial]:
    return list(
        session.scalars(
            select(Trial)
            .where(Trial.evaluator_id == evaluator.id, Trial.answered_at.is_(None))
            .order_by(Trial.position)
        )
    )


def _complete(session: Session, *, study: Study, evaluator: Evaluator, now: datetime) -> None:
    if evaluator.completed_at is not None:
        return
    evaluator.completed_at = now
    evaluator.completion_code = rating_spec(study).completion_code or "".join(
        secrets.choice(_CODE_ALPHABET) for _ in range(10)
    )
    session.flush()


def _done(
    session: Session, *, study: Study, evaluator: Evaluator, plan: tuple[int, int] | None = None
) -> NextResult:
    return NextResult(
        status="done",
        progress=progress(session=session, study=study, evaluator=evaluator, plan=plan),
        completion_code=evaluator.completion_code,
        message="You have finished. Thank you!",
    )


def _lock_evaluator(session: Session, evaluator: Evaluator) -> None:
    """Serialize one evaluator's requests (two tabs) and reload its row.

    PostgreSQL: SELECT ... FOR UPDATE on the evaluator row; SQLite: BEGIN IMMEDIATE already did.
    Assigning a new trial additionally takes the study's lock (`_lock_study`), always in this
    order, so the common case (the open trial already exists) never waits for other evaluators.
    """
    session.refresh(evaluator, with_for_update=True)


def current_trial(
    *, session: Session, study: Study, evaluator: Evaluator, now: datetime | None = None
) -> NextResult:
    """The evaluator's current trial, assigning one when none is open; marks it shown.

    Calling it again (a reload, a second tab) returns the same trial until it is answered.
    """
    check_open(study)
    now = now or utcnow()
    _lock_evaluator(session, evaluator)
    if evaluator.completed_at is not None:
        return _done(session, study=study, evaluator=evaluator)
    open_trials = _open_trials(session, evaluator)
    if open_trials:
        trial = open_trials[0]
        if trial.shown_at is None:
            trial.shown_at = now  # the prefetched trial becomes the current one
            session.flush()
        return NextResult(
            status="trial",
            trial=trial,
            progress=progress(session=session, study=study, evaluator=evaluator),
        )
    _lock_study(session, study.id)
    plan = _plan(session, study)
    trial, reason = _assign(
        session, study=study, evaluator=evaluator, now=now, shown=True, plan=plan
    )
    if trial is not None:
        return NextResult(
            status="trial",
            trial=trial,
            progress=progress(session=session, study=study, evaluator=evaluator, plan=plan),
        )
    if reason == "wait" or _stats(session, evaluator).answered == 0:
        return NextResult(
            status="unavailable",
            progress=progress(session=session, study=study, evaluator=evaluator, plan=plan),
            message="No pairs are ready to rate yet. Please come back a little later.",
        )
    _complete(session, study=study, evaluator=evaluator, now=now)
    return _done(session, study=study, evaluator=evaluator, plan=plan)


def trial_after(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    trial_id: int,
    now: datetime | None = None,
) -> NextResult:
    """The trial that follows `trial_id`, assigned ahead of time so its clips can be prefetched.

    It is not marked shown. Asking again returns the same trial; at most one trial is assigned
    ahead of the current one. Once `trial_id` is answered this is `current_trial`.
    """
    check_open(study)
    now = now or utcnow()
    _lock_evaluator(session, evaluator)
    trial = _own_trial(session, evaluator=evaluator, trial_id=trial_id)
    if evaluator.completed_at is not None:
        return _done(session, study=study, evaluator=evaluator)
    if trial.answered_at is not None:
        return current_trial(session=session, study=study, evaluator=evaluator, now=now)
    open_trials = _open_trials(session, evaluator)
    later = [t for t in open_trials if t.position > trial.position]
    if later:
        return NextResult(
            status="trial",
            trial=later[0],
            progress=progress(session=session, study=study, evaluator=evaluator),
        )
    if open_trials[0].id != trial.id or trial.position != _stats(session, evaluator).last_position:
        reason: str | None = "wait"  # only one trial is assigned ahead of the current one
        result_trial = None
        plan = None
    else:
        _lock_study(session, study.id)
        plan = _plan(session, study)
        result_trial, reason = _assign(
            session, study=study, evaluator=evaluator, now=now, shown=False, plan=plan
        )
    if result_trial is None:
        last = reason in ("quota", "exhausted")
        return NextResult(
            status="done" if last else "unavailable",
            progress=progress(session=session, study=study, evaluator=evaluator, plan=plan),
            message="This is the last pair." if last else "The next pair is not assigned yet.",
        )
    return NextResult(
        status="trial",
        trial=result_trial,
        progress=progress(session=session, study=study, evaluator=evaluator, plan=plan),
    )


# --- votes ------------------------------------------------------------------------------------


def _own_trial(
    session: Session, *, evaluator: Evaluator, trial_id: int, for_update: bool = False
) -> Trial:
    query = select(Trial).where(Trial.id == trial_id, Trial.evaluator_id == evaluator.id)
    if for_update:
        query = query.with_for_update()
    trial = session.scalar(query)
    if trial is None:
        # The same answer for another evaluator's trial as for none: ids reveal nothing.
        raise TrialNotFoundError(f"You have no trial {trial_id}.")
    return trial


def _check_votes(study: Study, votes: dict[str, str]) -> dict[str, Choice]:
    keys = study.criterion_keys
    unknown = sorted(set(votes) - set(keys))
    missing = [k for k in keys if k not in votes]
    problems = []
    if unknown:
        problems.append(f"unknown criteria {unknown}")
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


def _arm_view(choice: Choice, a_on_left: bool) -> str:
    if choice == Choice.tie:
        return "tie"
    return "a" if (choice == Choice.left) == a_on_left else "b"


def submit_votes(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    trial_id: int,
    votes: dict[str, str],
    now: datetime | None = None,
) -> SubmitResult:
    """Store one answer per criterion for a trial, all at once (the caller commits).

    Idempotent: the same votes again return the stored result; different votes for an answered
    trial raise VoteConflictError. Nothing is stored when anything is wrong.
    """
    now = now or utcnow()
    if study.status == StudyStatus.closed:
        check_open(study)
    trial = _own_trial(session, evaluator=evaluator, trial_id=trial_id, for_update=True)
    checked = _check_votes(study, votes)
    if trial.answered_at is not None:
        stored = {v.criterion: v.choice for v in trial.votes}
        if stored == checked:
            return SubmitResult(trial=trial, votes=stored, created=False)
        raise VoteConflictError(
            "This pair was already answered differently (perhaps in another tab); the first "
            "answer stands and nothing was changed."
        )
    check_open(study)
    if trial.shown_at is None:
        raise NotCurrentError("This pair is not shown yet: answer the current pair first.")
    spec = rating_spec(study)
    elapsed = (now - trial.shown_at).total_seconds()
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
    session.add_all(Vote(trial_id=trial.id, criterion=k, choice=c) for k, c in checked.items())
    trial.answered_at = now
    if reasons:
        trial.flagged = True
        trial.flag_reason = "; ".join(reasons)[:200]
    session.flush()
    return SubmitResult(trial=trial, votes=checked, created=True)


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
    before = {v.criterion: _arm_view(v.choice, original.a_on_left) for v in original.votes}
    differ = [k for k, c in votes.items() if before.get(k) != _arm_view(c, trial.a_on_left)]
    if not differ:
        return []
    return [
        f"inconsistent repeat: {len(differ)} of {len(votes)} criteria differ from trial "
        f"{original.id} ({', '.join(differ)})"
    ]


# --- media ------------------------------------------------------------------------------------


def media_token(*, secret: str, trial: Trial, side: Literal["l", "r"]) -> str:
    return tokens.media_token(secret, trial.id, side)


def media_key(*, session: Session, secret: str, study: Study, token: str) -> str | None:
    """The storage key behind a media token of this study, or None."""
    parsed = tokens.parse_media_token(secret, token)
    if parsed is None:
        return None
    trial_id, side = parsed
    row = session.execute(
        select(Trial.a_on_left, Matchup.clip_a_id, Matchup.clip_b_id)
        .join(Matchup, Matchup.id == Trial.matchup_id)
        .where(Trial.id == trial_id, Matchup.study_id == study.id)
    ).first()
    if row is None:
        return None
    a_shown = row.a_on_left == (side == "l")
    clip = session.get(Clip, row.clip_a_id if a_shown else row.clip_b_id)
    if clip is None or clip.status != ClipStatus.done or not clip.storage_key:
        return None
    return clip.storage_key
