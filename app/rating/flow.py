"""The evaluator's requests as use cases: join, next pair, submit an answer. The JSON API, the
evaluator pages and the tests all call these, so the tests run the composition production runs.

Each request reads first and writes only when it must. With `read` (a read-only session, as the
web routes pass) a request that changes nothing (a reload, a prefetch already assigned, a
waiting evaluator) never takes the write lock (SQLite) or the evaluator's row lock (PostgreSQL),
and a submission is checked before the write transaction starts; without it the same steps run
in `session`. Every write ends with one commit here, so an answer never lacks its next pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from app.rating import enrollment, service
from app.rating.errors import NotAnEvaluatorError, UnknownLinkError
from app.rating.models import Evaluator
from app.rating.schemas import ClientTiming, WatchIn
from app.studies.models import Study

NOT_JOINED = "Join the study first (POST /r/<key>/api/join), then send the evaluator token."


@dataclass(frozen=True)
class Joined:
    evaluator: Evaluator
    resumed: bool
    progress: service.Progress
    next: service.NextResult | None = None  # with `first_pair`: what `next_trial` would answer


@dataclass(frozen=True)
class Answered:
    stored: service.SubmitResult
    next: service.NextResult  # the pair to show now, with the one after it when assigned


def rater(*, session: Session, secret: str, key: str, token: str | None) -> tuple[Study, Evaluator]:
    """The open study a link key names and the evaluator its token names, in one statement."""
    study, evaluator = enrollment.study_and_evaluator(
        session=session, secret=secret, key=key, token=token
    )
    if study is None:
        raise UnknownLinkError()
    enrollment.check_open(study)
    if evaluator is None:
        raise NotAnEvaluatorError(NOT_JOINED)
    return study, evaluator


def join(
    *,
    session: Session,
    secret: str,
    study: Study,
    invite: str | None = None,
    external_id: str | None = None,
    current: Evaluator | None = None,
    external_study_id: str | None = None,
    external_session_id: str | None = None,
    first_pair: bool = False,
    now: datetime | None = None,
) -> Joined:
    """Enroll or resume an evaluator (see `enrollment.join`) and commit. With `first_pair`, the
    same transaction also gives what `next_trial` would: the current pair, marked shown, with
    the one after it assigned ahead, so an arrival is one request."""
    result = enrollment.join(
        session=session,
        secret=secret,
        study=study,
        invite=invite,
        external_id=external_id,
        current=current,
        external_study_id=external_study_id,
        external_session_id=external_session_id,
    )
    first = None
    if first_pair:
        first = _current_with_following(session, study, result.evaluator, now)
        progress = first.progress
    else:
        progress = service.progress(session=session, study=study, evaluator=result.evaluator)
    session.commit()
    return Joined(evaluator=result.evaluator, resumed=result.resumed, progress=progress, next=first)


def is_last(result: service.NextResult) -> bool:
    """Whether `result`'s trial is the evaluator's last: nothing follows it (answered, it
    reaches their quota), so there is nothing to prefetch and its answer says `done`.

    From the progress the result carries: with no trial after it, the current trial is the
    last when every other trial is answered and together they make the planned total. (An
    evaluator finished early because no further pair can be made for them is not told ahead;
    their `next?after` prefetch hears it, as before.)"""
    return (
        result.status == "trial"
        and result.after is None
        and result.progress.answered + 1 >= result.progress.total
    )


def next_trial(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    after: int | None = None,
    read: Session | None = None,
    now: datetime | None = None,
) -> service.NextResult:
    """Without `after`: the current trial (marked shown), with the trial that follows it in
    `after` (assigned ahead, so its clips can preload). With `after`: the trial after that one."""
    reader = read or session
    state = service.evaluator_state(session=reader, evaluator=evaluator)
    if after is None:
        result = service.peek_current(session=reader, study=study, evaluator=evaluator, state=state)
        if result is not None:
            result = service.peek_following(
                session=reader, study=study, evaluator=evaluator, result=result, state=state
            )
    else:
        result = service.peek_after(
            session=reader, study=study, evaluator=evaluator, trial_id=after, state=state
        )
    if read is not None:
        read.close()  # keeps what was loaded, ends the read transaction
    if result is not None:
        return result
    study, evaluator = _to_writer(read, session, study, evaluator)
    if after is None:
        result = _current_with_following(session, study, evaluator, now)
    else:
        result = service.trial_after(
            session=session, study=study, evaluator=evaluator, trial_id=after, known=state, now=now
        )
    session.commit()
    return result


def submit(
    *,
    session: Session,
    study: Study,
    evaluator: Evaluator,
    trial_id: int,
    votes: dict[str, str],
    timing: ClientTiming | None = None,
    watch: WatchIn | None = None,
    read: Session | None = None,
    now: datetime | None = None,
) -> Answered:
    """Store one answer per criterion for a trial, all at once, and move on: the next pair (the
    prefetched one, now shown) and the one after it, in the same transaction.

    Idempotent: the same votes again return the stored result; different votes for an answered
    trial raise VoteConflictError. Nothing is stored when anything is wrong."""
    submission = service.check_submission(
        session=read or session,
        study=study,
        evaluator=evaluator,
        trial_id=trial_id,
        votes=votes,
        timing=timing,
        watch=watch,
        now=now,
    )
    study, evaluator = _to_writer(read, session, study, evaluator)
    stored = service.store_submission(
        session=session, study=study, evaluator=evaluator, submission=submission
    )
    following = service.next_after_submit(
        session=session, study=study, evaluator=evaluator, submission=submission, now=now
    )
    session.commit()
    return Answered(stored=stored, next=following)


def _current_with_following(
    session: Session, study: Study, evaluator: Evaluator, now: datetime | None
) -> service.NextResult:
    """The current pair (marked shown) and its follower in one write transaction: an arriving
    evaluator needs no `next?after` request."""
    current = service.current_trial(session=session, study=study, evaluator=evaluator, now=now)
    return service.with_following(
        session=session, study=study, evaluator=evaluator, result=current, now=now
    )


def _to_writer(
    read: Session | None, session: Session, study: Study, evaluator: Evaluator
) -> tuple[Study, Evaluator]:
    """End the read transaction (keeping what it loaded) and carry its objects to `session`."""
    if read is None:
        return study, evaluator
    read.close()  # idempotent
    return session.merge(study, load=False), session.merge(evaluator, load=False)
