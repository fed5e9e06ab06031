"""Signed tokens of the rating flow, all keyed on `settings.resolved_secret_key()`.

Tokens are made with the current secret and checked against it and, during a key rotation, the
previous one (`VIDARENA_SECRET_KEY_PREVIOUS`): pass a `SigningSecret` to carry both. Each purpose
has its own salt, so a token made for one purpose is refused for every other:

- study link key (`/r/<key>`): the study's id plus an HMAC, so evaluator URLs never carry the
  slug (slugs often name pipelines, e.g. `lightning-vs-animatediff`) and cannot be guessed;
- invite token (`?invite=`): a study id and a random nonce; one nonce is one evaluator, for good
  (a personal invite cannot be shared: see `enrollment.join`);
- evaluator token (cookie `vidarena_eval`, or `Authorization: Bearer` for API clients);

Invite and evaluator tokens are accepted in one spelling only: base64 leaves spare bits in the
signature's last character (and the decoder skips stray characters), and each spelling would
otherwise count as a token of its own, e.g. for the per-evaluator vote limit.
- media token (`/r/<key>/media/<token>`): one side of one trial, the clip shown there and the
  clip on the other side (the media route pads both to one size: app/rating/padding.py),
  encrypted (AES-SIV): the URL names no trial, clip or storage key, yet the media route needs no
  database lookup to know which clip to serve.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

EVALUATOR_COOKIE = "vidarena_eval"
EVALUATOR_MAX_AGE = 180 * 24 * 3600  # a long crowd study can run for months
MAX_EVALUATOR_TOKEN = 512  # genuine ones are about 100 characters

_STUDY_KEY = re.compile(r"(?P<id>[1-9][0-9]{0,11})-(?P<mac>[a-z2-7]{16})")
# study id, trial id, clip id, the other side's clip id, side: fixed width, so the token's
# length says nothing either.
_MEDIA = struct.Struct(">QQQQc")
_MEDIA_CONTEXT = [b"vidarena.media"]


class SigningSecret(str):
    """The current secret, which signs (it *is* that string, so it goes wherever a secret
    does), and `previous`: secrets still accepted for verification during a key rotation."""

    previous: tuple[str, ...]

    def __new__(cls, current: str, previous: Iterable[str] = ()) -> SigningSecret:
        self = super().__new__(cls, current)
        self.previous = tuple(p for p in previous if p and p != current)
        return self


def _verifying(secret: str) -> tuple[str, ...]:
    """Every secret a token may have been made with: the current one first."""
    return (str(secret), *getattr(secret, "previous", ()))


def _one_spelling(token: str) -> bool:
    """Whether an itsdangerous token's signature is spelled as it would be made."""
    signature = token.rpartition(".")[2]
    try:
        return base64_encode(base64_decode(signature)).decode() == signature
    except BadData:
        return False


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:16]  # 80 bits


@lru_cache(maxsize=4096)  # every evaluator request checks one; its entries are a few bytes
def _study_mac(secret: str, study_id: int) -> str:
    return _mac(secret, f"vidarena.study-link:{study_id}")


def study_key(secret: str, study_id: int) -> str:
    """The opaque path segment of a study's evaluator pages, e.g. `3-k2v7...`."""
    return f"{study_id}-{_study_mac(str(secret), study_id)}"


def parse_study_key(secret: str, key: str) -> int | None:
    """The study id a key names, or None for a malformed or forged key."""
    match = _STUDY_KEY.fullmatch(key)
    if match is None:
        return None
    study_id = int(match["id"])
    for candidate in _verifying(secret):
        if hmac.compare_digest(_study_mac(candidate, study_id), match["mac"]):
            return study_id
    return None


def new_invite(secret: str, study_id: int) -> tuple[str, str]:
    """A fresh (token, nonce) pair: the token goes in the link, the nonce names the evaluator."""
    nonce = secrets.token_urlsafe(9)
    return URLSafeSerializer(secret, salt="vidarena.invite").dumps([study_id, nonce]), nonce


def parse_invite(secret: str, token: str, study_id: int) -> str | None:
    """The invite's nonce when the token is genuine and made for this study, else None."""
    if len(token) > MAX_EVALUATOR_TOKEN or not _one_spelling(token):
        return None
    value = _first_valid(
        lambda key: URLSafeSerializer(key, salt="vidarena.invite").loads(token), secret
    )
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
    if len(token) > MAX_EVALUATOR_TOKEN:  # checked first: the cache below keeps what it sees
        return None
    verified = next(
        (v for key in _verifying(secret) if (v := _verified_evaluator_token(key, token))), None
    )
    if verified is None:
        return None
    value, signed_at = verified
    if time.time() - signed_at > EVALUATOR_MAX_AGE:
        return None
    if not isinstance(value, list) or len(value) != 2 or value[0] != study_id:
        return None
    return value[1] if isinstance(value[1], str) else None


@lru_cache(maxsize=16384)  # an evaluator sends the same token with each of its requests
def _verified_evaluator_token(secret: str, token: str) -> tuple[Any, float] | None:
    if not _one_spelling(token):
        return None
    try:
        value, signed_at = URLSafeTimedSerializer(secret, salt="vidarena.evaluator").loads(
            token, return_timestamp=True
        )
    except BadData:
        return None
    return value, signed_at.timestamp()


def _first_valid(loads: Any, secret: str) -> Any:
    """What `loads(key)` returns for the first secret that verifies; None when none does."""
    for key in _verifying(secret):
        try:
            return loads(key)
        except BadData:
            continue
    return None


@dataclass(frozen=True, slots=True)
class MediaRef:
    study_id: int
    trial_id: int
    clip_id: int
    side: str  # "l" or "r"
    partner_id: int  # the clip on the other side of the trial (the two are padded alike)


@lru_cache(maxsize=8)
def _media_cipher(secret: str) -> AESSIV:
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"vidarena.media").derive(
        secret.encode()
    )
    return AESSIV(key)


def media_token(secret: str, ref: MediaRef) -> str:
    """Names the clip on one side of one trial, encrypted and authenticated. Deterministic (the
    same trial side always has the same URL, so browsers cache it); reveals neither the trial,
    the clip, its arm nor its storage key."""
    if ref.side not in ("l", "r"):
        raise ValueError(f"side must be 'l' or 'r', not {ref.side!r}")
    plain = _MEDIA.pack(ref.study_id, ref.trial_id, ref.clip_id, ref.partner_id, ref.side.encode())
    sealed = _media_cipher(str(secret)).encrypt(plain, _MEDIA_CONTEXT)
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def parse_media_token(secret: str, token: str) -> MediaRef | None:
    """What a genuine token names; None for a malformed, forged or tampered one."""
    if len(token) > 128:
        return None
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        return None
    if base64.urlsafe_b64encode(sealed).decode().rstrip("=") != token:
        return None  # one spelling per token (the decoder ignores stray characters and bits)
    plain = None
    for key in _verifying(secret):
        try:
            plain = _media_cipher(key).decrypt(sealed, _MEDIA_CONTEXT)
            break
        except (ValueError, InvalidTag):
            continue
    try:
        study_id, trial_id, clip_id, partner_id, side = _MEDIA.unpack(plain or b"")
    except struct.error:
        return None
    if side not in (b"l", b"r"):
        return None
    return MediaRef(study_id, trial_id, clip_id, side.decode(), partner_id)
