"""Evaluator pages (welcome and instructions, rating, done) and the opaque media route.

Every page lives under `/r/<key>`, where the key is an HMAC of the study id (never its slug, which
may name pipelines); the evaluator cookie is scoped to that path. Nothing served here names an arm,
a pipeline, a clip or the study itself. Refusals (app/rating/errors.py) are raised; the app's one
RatingError handler shows them as the evaluator's message page (as text on the media route).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.deps import ReadSessionDep, SessionDep, SettingsDep
from app.rating import enrollment, flow, service, tokens
from app.rating import media as rating_media
from app.rating.api import next_out, study_out
from app.rating.deps import (
    PRIVATE_HEADERS,
    SecretDep,
    StorageDep,
    check_same_origin,
    find_evaluator,
    find_study,
    in_rating_lane,
    set_evaluator_cookie,
)
from app.rating.errors import EnrollmentError, NotAnEvaluatorError
from app.rating.media import MediaCache, MediaFound
from app.storage import InvalidKeyError, ObjectNotFoundError, StorageError, media_type
from app.studies.schemas import completion_url
from app.web.pages import templates

router = APIRouter(prefix="/r/{key}", tags=["rating"], include_in_schema=False)
media_router = APIRouter(prefix="/r/{key}", tags=["rating"])

# Media is immutable under its token, and personal: browsers may keep it, shared caches not.
MEDIA_CACHE_CONTROL = "private, max-age=86400, immutable"


def page(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=PRIVATE_HEADERS
    )


@router.get("", response_class=HTMLResponse)
def welcome(key: str, request: Request, session: ReadSessionDep, secret: SecretDep) -> Response:
    """The link evaluators open: what they will do, each criterion defined, then Start."""
    study = find_study(session, secret, key)
    enrollment.check_open(study)
    spec = enrollment.rating_spec(study)
    invite = request.query_params.get("invite") or None
    external_id = enrollment.clean_external_id(request.query_params.get(spec.external_id_param))
    external_study_id, external_session_id = enrollment.platform_ids(
        study_id=request.query_params.get(spec.external_study_param),
        session_id=request.query_params.get(spec.external_session_param),
    )
    enrollment.check_invite(secret=secret, study=study, invite=invite)
    evaluator = find_evaluator(request, session, secret, study)
    if not (invite or spec.open_enrollment or evaluator is not None):
        raise EnrollmentError(
            "This study is by invitation only: please open the invite link you were given."
        )
    answered = 0
    if evaluator is not None and not (invite or external_id):
        if evaluator.completed_at is not None:
            return RedirectResponse(f"/r/{key}/done", status_code=303, headers=PRIVATE_HEADERS)
        answered = service.progress(session=session, study=study, evaluator=evaluator).answered
    context = {
        "key": key,
        "study": study_out(study),
        "pairs": service.planned_trials(session=session, study=study),
        "invite": invite,
        "external_id": external_id,
        "external_study_id": external_study_id,
        "external_session_id": external_session_id,
        "returning": evaluator is not None and not (invite or external_id),
        "answered": answered,
    }
    return page(request, "rate/welcome.html", context)


@router.post("/join", response_class=HTMLResponse)
async def join(
    key: str,
    request: Request,
    session: SessionDep,
    secret: SecretDep,
    settings: SettingsDep,
    invite: Annotated[str, Form(max_length=300)] = "",
    external_id: Annotated[str, Form(max_length=300)] = "",
    external_study_id: Annotated[str, Form(max_length=300)] = "",
    external_session_id: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    """Join, and assign the first pair (marked shown) and the one after it in the same
    transaction (on the rating threads, as the API's join), so the rating page it leads to
    only reads them."""
    check_same_origin(request)
    platform = (external_study_id, external_session_id)
    return await in_rating_lane(
        request, _join, key, request, session, secret, settings, invite, external_id, platform
    )


def _join(
    key: str,
    request: Request,
    session: Session,
    secret: str,
    settings: Settings,
    invite: str,
    external_id: str,
    platform: tuple[str, str],
) -> Response:
    study = find_study(session, secret, key)
    joined = flow.join(
        session=session,
        secret=secret,
        study=study,
        invite=invite or None,
        external_id=external_id or None,
        current=find_evaluator(request, session, secret, study),
        external_study_id=platform[0] or None,
        external_session_id=platform[1] or None,
        first_pair=True,
    )
    response = RedirectResponse(f"/r/{key}/rate", status_code=303, headers=PRIVATE_HEADERS)
    set_evaluator_cookie(
        response, settings=settings, secret=secret, key=key, evaluator=joined.evaluator
    )
    return response


@router.get("/rate", response_class=HTMLResponse)
def rate(
    key: str, request: Request, read: ReadSessionDep, session: SessionDep, secret: SecretDep
) -> Response:
    """The rating page, with the current pair and the one after it in its config (what `GET
    next` would answer: read only, after a join that assigned them), so arriving costs the page
    no API request. Its script drives the JSON API from there: submits, and `GET next` when it
    waits or must catch up."""
    study = find_study(read, secret, key)
    enrollment.check_open(study)
    evaluator = find_evaluator(request, read, secret, study)
    if evaluator is None:
        raise NotAnEvaluatorError(
            "We could not tell who you are (cookies may be blocked or have expired). "
            "Please open your invite link again: your answers so far are kept."
        )
    if evaluator.completed_at is not None:
        return RedirectResponse(f"/r/{key}/done", status_code=303, headers=PRIVATE_HEADERS)
    spec = enrollment.rating_spec(study)
    out = study_out(study)
    first = flow.next_trial(read=read, session=session, study=study, evaluator=evaluator)
    config = {
        "next": f"/r/{key}/api/next",
        "votes": f"/r/{key}/api/trials/{{id}}/votes",
        "done": f"/r/{key}/done",
        "criteria": study.criterion_keys,
        "minViewSeconds": spec.min_view_seconds,
        "first": next_out(
            request, key=key, secret=secret, study_id=study.id, result=first
        ).model_dump(mode="json"),
    }
    context = {"key": key, "study": out, "config": config}
    return page(request, "rate/rate.html", context)


@router.get("/done", response_class=HTMLResponse)
def done(key: str, request: Request, session: ReadSessionDep, secret: SecretDep) -> Response:
    study = find_study(session, secret, key)
    evaluator = find_evaluator(request, session, secret, study)
    if evaluator is None:
        raise NotAnEvaluatorError(
            "We could not tell who you are. Please open your invite link again."
        )
    if evaluator.completed_at is None:
        return RedirectResponse(f"/r/{key}/rate", status_code=303, headers=PRIVATE_HEADERS)
    progress = service.progress(session=session, study=study, evaluator=evaluator)
    code = evaluator.completion_code
    template = enrollment.rating_spec(study).completion_url
    url = completion_url(template, code) if template and code else None
    context = {"code": code, "answered": progress.answered, "url": url}
    if url is None:
        return page(request, "rate/done.html", context)
    # Back to the recruiting platform with the code; the page (code and link) is the body, for
    # a client that does not follow redirects.
    response = page(request, "rate/done.html", context, status_code=303)
    response.headers["Location"] = url
    return response


@media_router.get(
    "/media/{token}",
    response_class=Response,
    summary="A clip of a trial (opaque URL from a trial's left/right url)",
    responses={200: {"content": {"image/gif": {}}}, 404: {"description": "Unknown media"}},
)
async def media(
    key: str, token: str, request: Request, secret: SecretDep, storage: StorageDep
) -> Response:
    """The clip behind an opaque, per-trial token, padded to the size of its trial's other clip
    (app/rating/padding.py). Served without Last-Modified or ETag (they would carry render times
    or content hashes), cacheable by the browser only: the URL names one side of one trial, so
    the padded bytes under it never change and no cache can answer it with another pair's.

    `async`, and on the event loop while the process cache has the answer (every view of a clip
    after its first): the busiest route, two requests per trial, does no thread hop then."""
    headers = {**PRIVATE_HEADERS, "Cache-Control": MEDIA_CACHE_CONTROL}
    # Not cached: a clip missing now (storage restored late, a token tried early) may be found
    # on the next try.
    not_found = Response(
        "no such media", status_code=404, media_type="text/plain", headers=PRIVATE_HEADERS
    )
    study_id = tokens.parse_study_key(secret, key)
    ref = tokens.parse_media_token(secret, token)
    if study_id is None or ref is None or ref.study_id != study_id:
        return not_found
    cache: MediaCache = request.app.state.media_cache
    found = cache.found(study_id=study_id, clip_id=ref.clip_id)
    partner = cache.found(study_id=study_id, clip_id=ref.partner_id)
    if found is None or partner is None:
        pair = (ref.clip_id, ref.partner_id)
        both = await run_in_threadpool(_media_lookup, request, study_id, pair)
        if both is None:
            return not_found
        found, partner = both[ref.clip_id], both[ref.partner_id]
    enrollment.check_open_status(found.status)  # refused as text by the RatingError handler
    if found.storage_key is None:
        return not_found
    data = cache.blob(found.storage_key)
    partner_size = partner.size_bytes
    try:
        if data is None:
            data = await run_in_threadpool(storage.read, found.storage_key)
            cache.keep_blob(found.storage_key, data)
        if partner_size is None and partner.storage_key is not None:  # a size not recorded
            partner_size = await run_in_threadpool(storage.size, partner.storage_key)
    except (ObjectNotFoundError, InvalidKeyError):  # a tampered key reads nothing: not found
        return not_found
    except StorageError:
        return Response("media temporarily unavailable", status_code=503, headers=PRIVATE_HEADERS)
    body = rating_media.served(data, size=found.size_bytes, partner_size=partner_size)
    return Response(body, media_type=media_type(found.storage_key), headers=headers)


def _media_lookup(
    request: Request, study_id: int, clip_ids: tuple[int, int]
) -> dict[int, MediaFound] | None:
    with request.app.state.read_session_factory() as session:
        found = rating_media.media_lookup(session=session, study_id=study_id, clip_ids=clip_ids)
    for clip_id, one in (found or {}).items():
        request.app.state.media_cache.keep(study_id=study_id, clip_id=clip_id, found=one)
    return found
