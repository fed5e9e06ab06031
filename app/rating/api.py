"""The evaluator JSON API: join -> next trial -> submit votes -> ... -> done.

The browser's rating page uses exactly this API; a lab can drive it from its own survey tool and a
load test without a browser. Authenticate with the `evaluator_token` from `join` as
`Authorization: Bearer <token>` (browsers get it as a cookie scoped to `/r/<key>`).

Errors (app/rating/errors.py, answered by the app's one RatingError handler) are JSON:
`{"detail": {"code": "...", "message": "..."}}` with 401 (not joined), 403
(invite required, study not open), 404 (unknown link or trial), 409 (study closed, pair answered
differently, answered too early, not the current pair) or 422 (invalid votes, timing or watch
telemetry). A refused request stores nothing. While the study's clips still render, `next` may
answer `waiting` with a `retry_after`: the evaluator is not finished, the next pair is on its way.

Round trips: `join` answers the first pair too (`next`, as `GET next` would: the current pair,
marked shown, and `after`, the pair after it, assigned ahead), so an arrival is one request; a
submit's answer carries the next pair and the one after it, so each pair is one request. When a
pair has no `after`, `last: true` says it is the evaluator's last (ask nothing more: its answer
carries `done` and the completion code); otherwise `GET next?after=<trial id>` asks for it.
`GET next` stays for resuming (a reload, another tab or client) and for a page that waits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session

from app.config import Settings
from app.deps import ReadSessionDep, SessionDep, SettingsDep
from app.rating import enrollment, flow, schemas, service, tokens
from app.rating.deps import (
    PRIVATE_HEADERS,
    SecretDep,
    check_same_origin,
    find_evaluator,
    find_study,
    in_rating_lane,
    request_token,
    set_evaluator_cookie,
)
from app.rating.errors import NotAnEvaluatorError, UnknownLinkError
from app.rating.media import media_token
from app.rating.models import Trial
from app.studies.models import Study

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorOut} for status in (401, 403, 404, 409, 422)
}
MAX_ID = 2**31 - 1  # ids are 32-bit on PostgreSQL; larger ones were a 500 (DataError/OverflowError)
router = APIRouter(prefix="/r/{key}/api", tags=["rating"], responses=ERRORS)


def study_out(study: Study) -> schemas.StudyOut:
    spec = enrollment.rating_spec(study)
    return schemas.StudyOut(
        criteria=[schemas.CriterionOut(**c.model_dump()) for c in study.criterion_list],
        min_view_seconds=spec.min_view_seconds,
        open_enrollment=spec.open_enrollment,
        external_id_param=spec.external_id_param,
        external_study_param=spec.external_study_param,
        external_session_param=spec.external_session_param,
    )


def trial_out(
    request: Request,
    *,
    key: str,
    secret: str,
    study_id: int,
    trial: Trial,
    prompt: str,
    clips: tuple[int, int],
) -> schemas.TrialOut:
    base = f"{request.scope.get('root_path', '')}/r/{key}/media/"
    sides: tuple[tuple[Literal["l", "r"], int, int], ...] = (
        ("l", clips[0], clips[1]),
        ("r", clips[1], clips[0]),
    )
    left, right = (
        base
        + media_token(
            secret=secret,
            study_id=study_id,
            trial=trial,
            side=side,
            clip_id=clip_id,
            partner_id=partner_id,
        )
        for side, clip_id, partner_id in sides
    )
    # The prompt's text is all that leaves the server of its matchup.
    return schemas.TrialOut(
        id=trial.id,
        position=trial.position,
        prompt=prompt,
        left=schemas.MediaOut(url=left),
        right=schemas.MediaOut(url=right),
    )


def next_out(
    request: Request, *, key: str, secret: str, study_id: int, result: service.NextResult
) -> schemas.NextOut:
    def out(
        trial: Trial | None, prompt: str | None, clips: tuple[int, int] | None
    ) -> schemas.TrialOut | None:
        if trial is None or prompt is None or clips is None:
            return None
        return trial_out(
            request,
            key=key,
            secret=secret,
            study_id=study_id,
            trial=trial,
            prompt=prompt,
            clips=clips,
        )

    return schemas.NextOut(
        status=result.status,
        trial=out(result.trial, result.prompt, result.clips),
        after=out(result.after, result.after_prompt, result.after_clips),
        last=flow.is_last(result),
        progress=schemas.Progress(**vars(result.progress)),
        completion_code=result.completion_code,
        completion_url=result.completion_url,
        message=result.message,
        retry_after=result.retry_after,
    )


def _gate(request: Request, secret: str, key: str) -> None:
    """Refuse on the event loop what needs no database to refuse (an unknown link, no valid
    evaluator token for this study), so a flood of such requests never waits in the rating lane
    beside the evaluators'. The token's evaluator is still looked up in `_context`."""
    study_id = tokens.parse_study_key(secret, key)
    if study_id is None:
        raise UnknownLinkError()
    token = request_token(request)
    if token is None or tokens.parse_evaluator_token(secret, token, study_id) is None:
        raise NotAnEvaluatorError(flow.NOT_JOINED)


@router.get("/study", response_model=schemas.StudyOut, summary="Criteria and rules of a study")
def get_study(
    key: str, response: Response, session: ReadSessionDep, secret: SecretDep
) -> schemas.StudyOut:
    response.headers.update(PRIVATE_HEADERS)
    study = find_study(session, secret, key)
    enrollment.check_open(study)
    out = study_out(study)
    # FastAPI validates a sync route's answer on a second thread hop: the connection must not
    # wait for a thread meanwhile (under a burst, every pooled connection did).
    session.close()
    return out


@router.post("/join", response_model=schemas.JoinOut, summary="Join (or resume) a study")
async def join(
    key: str,
    body: schemas.JoinIn,
    request: Request,
    response: Response,
    session: SessionDep,
    secret: SecretDep,
    settings: SettingsDep,
) -> schemas.JoinOut:
    """Enroll with a personal invite token, a participant id (open enrollment), or
    anonymously under open enrollment. The same invite or participant id resumes the same
    evaluator; so does a request carrying the evaluator token. An invite is one evaluator: a
    participant id sent with it is recorded on that evaluator, and a different one later is
    refused (409 `invite_used`). Browsers may call this from the study's own pages only (403
    `cross_site` otherwise).

    The answer carries the first pair (`next`, what `GET next` would answer, the pair marked
    shown and the one after it assigned ahead), in the same transaction: an arrival is one
    request. `first_pair: false` leaves that to a later `GET next`."""
    response.headers.update(PRIVATE_HEADERS)
    check_same_origin(request)
    if tokens.parse_study_key(secret, key) is None:
        raise UnknownLinkError()
    # On the rating threads, as `next` and submits: it assigns pairs under the same locks.
    return await in_rating_lane(
        request, _join, key, body, request, response, session, secret, settings
    )


def _join(
    key: str,
    body: schemas.JoinIn,
    request: Request,
    response: Response,
    session: Session,
    secret: str,
    settings: Settings,
) -> schemas.JoinOut:
    study = find_study(session, secret, key)
    joined = flow.join(
        session=session,
        secret=secret,
        study=study,
        invite=body.invite,
        external_id=body.external_id,
        current=find_evaluator(request, session, secret, study),
        external_study_id=body.external_study_id,
        external_session_id=body.external_session_id,
        first_pair=body.first_pair,
    )
    token = set_evaluator_cookie(
        response, settings=settings, secret=secret, key=key, evaluator=joined.evaluator
    )
    first = None
    if joined.next is not None:
        first = next_out(request, key=key, secret=secret, study_id=study.id, result=joined.next)
    return schemas.JoinOut(
        evaluator_token=token,
        resumed=joined.resumed,
        study=study_out(study),
        progress=schemas.Progress(**vars(joined.progress)),
        next=first,
    )


@router.get("/next", response_model=schemas.NextOut, summary="The current (or following) trial")
async def next_trial(
    key: str,
    request: Request,
    response: Response,
    read: ReadSessionDep,
    session: SessionDep,
    secret: SecretDep,
    after: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="Prefetch: the trial that follows this one (assigned once, not marked "
            "shown). Without it: the current trial, which is marked shown.",
        ),
    ] = None,
) -> schemas.NextOut:
    """Without `after`: the evaluator's current trial (the same one until it is answered, in any
    number of tabs), and in `after` the trial that follows it, assigned ahead, so its clips can
    load meanwhile. With `after`: the trial after that one (for a client that had no `after`)."""
    response.headers.update(PRIVATE_HEADERS)
    _gate(request, secret, key)
    return await in_rating_lane(request, _next_trial, key, request, read, session, secret, after)


def _next_trial(
    key: str, request: Request, read: Session, session: Session, secret: str, after: int | None
) -> schemas.NextOut:
    study, evaluator = flow.rater(
        session=read, secret=secret, key=key, token=request_token(request)
    )
    result = flow.next_trial(
        read=read, session=session, study=study, evaluator=evaluator, after=after
    )
    return next_out(request, key=key, secret=secret, study_id=study.id, result=result)


@router.post("/trials/{trial_id}/votes", response_model=schemas.VotesOut, summary="Answer a trial")
async def submit_votes(
    key: str,
    trial_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    body: schemas.VotesIn,
    request: Request,
    response: Response,
    read: ReadSessionDep,
    session: SessionDep,
    secret: SecretDep,
) -> schemas.VotesOut:
    """One answer per criterion, stored in one transaction. Repeating the same submission
    returns the same answer; a different one for an answered trial is 409. The response carries
    the next trial (now current), so the page can show it at once, and the one after it
    (`next.after`, assigned ahead), so its clips can load meanwhile."""
    response.headers.update(PRIVATE_HEADERS)
    _gate(request, secret, key)
    return await in_rating_lane(
        request, _submit_votes, key, trial_id, body, request, read, session, secret
    )


def _submit_votes(
    key: str,
    trial_id: int,
    body: schemas.VotesIn,
    request: Request,
    read: Session,
    session: Session,
    secret: str,
) -> schemas.VotesOut:
    study, evaluator = flow.rater(
        session=read, secret=secret, key=key, token=request_token(request)
    )
    answered = flow.submit(
        read=read,
        session=session,
        study=study,
        evaluator=evaluator,
        trial_id=trial_id,
        votes={k: v.value for k, v in body.votes.items()},
        timing=body.timing,
        watch=body.watch,
    )
    answered_at = answered.stored.trial.answered_at
    assert answered_at is not None
    return schemas.VotesOut(
        trial_id=answered.stored.trial.id,
        votes=answered.stored.votes,
        answered_at=answered_at,
        next=next_out(request, key=key, secret=secret, study_id=study.id, result=answered.next),
    )
