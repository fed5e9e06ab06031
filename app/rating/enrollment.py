"""Enrollment: who may rate a study and as whom. Study links and their open/closed check,
personal invites, participant ids from recruiting platforms, evaluator tokens, and `join`."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.rating import tokens
from app.rating.errors import EnrollmentError, InviteUsedError, StudyClosedError, StudyNotOpenError
from app.rating.matchups import ensure_matchups
from app.rating.models import Evaluator
from app.studies.models import Study, StudyStatus
from app.studies.studyfile import RatingSpec

_EXTERNAL_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces


@dataclass(frozen=True)
class JoinResult:
    evaluator: Evaluator
    resumed: bool


def rating_spec(study: Study) -> RatingSpec:
    return RatingSpec.model_validate(study.rating or {})


def check_open(study: Study) -> None:
    """Only open studies take evaluators, trials and votes."""
    check_open_status(study.status)


def check_open_status(status: StudyStatus) -> None:
    if status == StudyStatus.open:
        return
    if status == StudyStatus.closed:
        raise StudyClosedError("This study has closed and no longer takes answers. Thank you!")
    raise StudyNotOpenError("This study is not open yet. Please try again later.")


def study_link(*, secret: str, study: Study, base_url: str = "") -> str:
    return f"{base_url.rstrip('/')}/r/{tokens.study_key(secret, study.id)}"


def get_study_by_key(*, session: Session, secret: str, key: str) -> Study | None:
    study_id = tokens.parse_study_key(secret, key)
    return session.get(Study, study_id) if study_id is not None else None


def new_invites(*, secret: str, study: Study, count: int, base_url: str = "") -> list[str]:
    """`count` personal invite links (stateless: each becomes an evaluator when first used)."""
    if not 1 <= count <= 10_000:
        raise ValueError(f"count must be 1..10000, got {count}")
    link = study_link(secret=secret, study=study, base_url=base_url)
    return [f"{link}?invite={tokens.new_invite(secret, study.id)[0]}" for _ in range(count)]


def clean_external_id(value: str | None, *, what: str = "participant id") -> str | None:
    """A platform's id from a link (`what` it is, for the message), None when blank."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not _EXTERNAL_ID.fullmatch(value):
        raise EnrollmentError(
            f"The {what} in this link is not valid (1-200 printable characters, no "
            "spaces). Please use the link exactly as your platform gave it.",
            code="invalid_external_id",
        )
    return value


def platform_ids(*, study_id: str | None, session_id: str | None) -> tuple[str | None, str | None]:
    """The platform's study and session ids of a link (Prolific's STUDY_ID and SESSION_ID),
    checked as participant ids are."""
    return (
        clean_external_id(study_id, what="study id"),
        clean_external_id(session_id, what="session id"),
    )


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


def study_and_evaluator(
    *, session: Session, secret: str, key: str, token: str | None
) -> tuple[Study | None, Evaluator | None]:
    """The study a link key names and the evaluator a token names in it, in one statement."""
    study_id = tokens.parse_study_key(secret, key)
    if study_id is None:
        return None, None
    public_id = tokens.parse_evaluator_token(secret, token, study_id) if token else None
    found = session.execute(
        _STUDY_AND_EVALUATOR, {"study_id": study_id, "public_id": public_id}
    ).first()
    return (found[0], found[1]) if found is not None else (None, None)


_STUDY_AND_EVALUATOR = (
    select(Study, Evaluator)
    .outerjoin(
        Evaluator,
        (Evaluator.study_id == Study.id) & (Evaluator.public_id == bindparam("public_id")),
    )
    .where(Study.id == bindparam("study_id"))
)


def evaluator_from_token(
    *, session: Session, secret: str, study: Study, token: str | None
) -> Evaluator | None:
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
    external_study_id: str | None = None,
    external_session_id: str | None = None,
) -> JoinResult:
    """Enroll or resume an evaluator.

    - a personal invite (its nonce) binds exactly one evaluator, for good: opening it again, on
      any device, resumes that evaluator. A participant id sent with it is recorded on that
      evaluator (the first one), never a new evaluator; a different id later is refused
      (InviteUsedError), so an invite cannot be shared. The only shared link is the
      open-enrollment study link;
    - without an invite, a participant id (e.g. a Prolific PID) is one evaluator: open
      enrollment only;
    - otherwise the evaluator of the cookie resumes;
    - otherwise, with open enrollment, a new anonymous evaluator.

    The platform's study and session ids, when given, are recorded on the evaluator (those of
    the latest join that names them: a session id changes when a participant starts again).
    """
    check_open(study)
    spec = rating_spec(study)
    nonce = check_invite(secret=secret, study=study, invite=invite)
    external_id = clean_external_id(external_id)
    platform = platform_ids(study_id=external_study_id, session_id=external_session_id)
    # No study-wide lock: two joins racing with one invite or participant id both try to make
    # its evaluator; the unique constraints let one win and the other resumes it.
    try:
        result = _enroll(session, study, spec, nonce, external_id, current)
    except _Raced:
        result = _enroll(session, study, spec, nonce, external_id, current)
    _record_platform(session, result.evaluator, *platform)
    return result


def _record_platform(
    session: Session, evaluator: Evaluator, study_id: str | None, session_id: str | None
) -> None:
    changed = False
    for name, value in (("external_study_id", study_id), ("external_session_id", session_id)):
        if value is not None and getattr(evaluator, name) != value:
            setattr(evaluator, name, value)
            changed = True
    if changed:
        session.flush()


class _Raced(Exception):
    """Another join made this invite's or participant id's evaluator first."""


def _enroll(
    session: Session,
    study: Study,
    spec: RatingSpec,
    nonce: str | None,
    external_id: str | None,
    current: Evaluator | None,
) -> JoinResult:
    if nonce is not None:
        return _join_invited(session, study=study, nonce=nonce, external_id=external_id)
    existing: Evaluator | None = None
    if external_id is not None:
        if not spec.open_enrollment:
            raise EnrollmentError(
                "This study is by invitation only: please use the invite link you were given."
            )
        existing = _evaluator_with(session, study, Evaluator.external_id == external_id)
    elif current is not None and current.study_id == study.id:
        existing = current
    elif not spec.open_enrollment:
        raise EnrollmentError(
            "This study is by invitation only: please use the invite link you were given."
        )
    if existing is not None:
        return JoinResult(evaluator=existing, resumed=True)
    return _new_evaluator(session, study=study, external_id=external_id, nonce=None)


def _join_invited(
    session: Session, *, study: Study, nonce: str, external_id: str | None
) -> JoinResult:
    """The one evaluator of an invite: resumed, or made; a participant id recorded on it.
    Its row is locked (PostgreSQL) so two joins cannot both record a participant id."""
    bound = _evaluator_with(session, study, Evaluator.invite == nonce, for_update=True)
    if external_id is not None and (bound is None or bound.external_id != external_id):
        if bound is not None and bound.external_id is not None:
            raise InviteUsedError(
                "This invite link was already used with another participant id. Each invite "
                "link is for one person: please use your own link, or ask the study's "
                "organizers for one."
            )
        if _evaluator_with(session, study, Evaluator.external_id == external_id) is not None:
            raise InviteUsedError(
                "This participant id has already joined this study with another link. Please "
                "use the link you joined with first.",
                code="external_id_used",
            )
    if bound is None:
        return _new_evaluator(session, study=study, external_id=external_id, nonce=nonce)
    if external_id is not None and bound.external_id is None:
        bound.external_id = external_id
        session.flush()
    return JoinResult(evaluator=bound, resumed=True)


def _evaluator_with(
    session: Session, study: Study, condition: ColumnElement[bool], *, for_update: bool = False
) -> Evaluator | None:
    query = select(Evaluator).where(Evaluator.study_id == study.id, condition)
    if for_update:  # a no-op on SQLite, whose writers are serialized already
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def _new_evaluator(
    session: Session, *, study: Study, external_id: str | None, nonce: str | None
) -> JoinResult:
    evaluator = Evaluator(
        study_id=study.id,
        public_id=secrets.token_urlsafe(16),
        external_id=external_id,
        invite=nonce,
    )
    try:
        with session.begin_nested():  # a savepoint: losing the race keeps the transaction
            session.add(evaluator)
    except IntegrityError as exc:  # (study, invite) or (study, external id) taken meanwhile
        raise _Raced() from exc
    ensure_matchups(session=session, study=study)
    return JoinResult(evaluator=evaluator, resumed=False)
