"""Signed tokens of the rating flow, all keyed on `settings.resolved_secret_key()`.

Each purpose has its own salt, so a token made for one purpose is refused for every other:

- study link key (`/r/<key>`): the study's id plus an HMAC, so evaluator URLs never carry the
  slug (slugs often name pipelines, e.g. `lightning-vs-animatediff`) and cannot be guessed;
- invite token (`?invite=`): a study id and a random nonce; one nonce is one evaluator;
- evaluator token (cookie `vidarena_eval`, or `Authorization: Bearer` for API clients);
- media token (`/r/<key>/media/<token>`): one side of one trial, never a clip id or storage key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from itsdangerous import BadData, Signer, URLSafeSerializer, URLSafeTimedSerializer

EVALUATOR_COOKIE = "vidarena_eval"
EVALUATOR_MAX_AGE = 180 * 24 * 3600  # a long crowd study can run for months

_STUDY_KEY = re.compile(r"(?P<id>[1-9][0-9]{0,11})-(?P<mac>[a-z2-7]{16})")
_MEDIA = re.compile(r"(?P<trial>[0-9a-f]{1,12})(?P<side>[lr])")


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:16]  # 80 bits


def study_key(secret: str, study_id: int) -> str:
    """The opaque path segment of a study's evaluator pages, e.g. `3-k2v7...`."""
    return f"{study_id}-{_mac(secret, f'vidarena.study-link:{study_id}')}"


def parse_study_key(secret: str, key: str) -> int | None:
    """The study id a key names, or None for a malformed or forged key."""
    match = _STUDY_KEY.fullmatch(key)
    if match is None:
        return None
    study_id = int(match["id"])
    expected = _mac(secret, f"vidarena.study-link:{study_id}")
    return study_id if hmac.compare_digest(expected, match["mac"]) else None


def new_invite(secret: str, study_id: int) -> tuple[str, str]:
    """A fresh (token, nonce) pair: the token goes in the link, the nonce names the evaluator."""
    nonce = secrets.token_urlsafe(9)
    return URLSafeSerializer(secret, salt="vidarena.invite").dumps([study_id, nonce]), nonce


def parse_invite(secret: str, token: str, study_id: int) -> str | None:
    """The invite's nonce when the token is genuine and made for this study, else None."""
    try:
        value = URLSafeSerializer(secret, salt="vidarena.invite").loads(token)
    except BadData:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or value[0] != study_id
        or not isinstance(value[1], str)
        or not 8 <= len(value[1]) <= 64
    ):
        return None
    return value[1]


def evaluator_token(secret: str, study_id: int, public_id: str) -> str:
    return URLSafeTimedSerializer(secret, salt="vidarena.evaluator").dumps([study_id, public_id])


def parse_evaluator_token(secret: str, token: str, study_id: int) -> str | None:
    """The evaluator's public id when the token is genuine, unexpired and for this study."""
    try:
        value = URLSafeTimedSerializer(secret, salt="vidarena.evaluator").loads(
            token, max_age=EVALUATOR_MAX_AGE
        )
    except BadData:
        return None
    if not isinstance(value, list) or len(value) != 2 or value[0] != study_id:
        return None
    return value[1] if isinstance(value[1], str) else None


def _media_signer(secret: str) -> Signer:
    return Signer(secret, salt="vidarena.media", digest_method=hashlib.sha256)


def media_token(secret: str, trial_id: int, side: str) -> str:
    """Names the left or right clip of one trial; reveals neither the clip nor its arm."""
    if side not in ("l", "r"):
        raise ValueError(f"side must be 'l' or 'r', not {side!r}")
    return _media_signer(secret).sign(f"{trial_id:x}{side}").decode()


def parse_media_token(secret: str, token: str) -> tuple[int, str] | None:
    try:
        value = _media_signer(secret).unsign(token).decode()
    except (BadData, UnicodeDecodeError):
        return None
    match = _MEDIA.fullmatch(value)
    if match is None:
        return None
    return int(match["trial"], 16), match["side"]
