"""Choose a backend from settings, and serve stored objects through FastAPI."""

from __future__ import annotations

import re
from typing import TypedDict
from urllib.parse import urlsplit

from starlette.responses import FileResponse, Response, StreamingResponse

from app.config import Settings
from app.storage.base import (
    CACHE_CONTROL,
    DEFAULT_CHUNK_SIZE,
    ObjectNotFoundError,
    Storage,
    media_type,
    sha256_of,
)
from app.storage.local import LocalStorage
from app.storage.s3 import S3Storage

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3 bucket naming rules


def get_storage(settings: Settings) -> Storage:
    """The backend `settings.storage_url` names: a folder path, or s3://bucket/optional/prefix.

    Cheap (nothing is created or contacted until first use); build one per process and reuse it.
    """
    url = settings.storage_url.strip()
    if not url:
        raise _bad_url(url, "it is empty")
    if "://" not in url:
        return LocalStorage(url)
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return LocalStorage(parts.path)
    if parts.scheme != "s3":
        raise _bad_url(url, f"the scheme {parts.scheme!r} is not supported")
    if "@" in parts.netloc:
        raise _bad_url(url, "put credentials in VIDARENA_S3_ACCESS_KEY_ID/_SECRET_ACCESS_KEY")
    if parts.query or parts.fragment:
        raise _bad_url(url, "it must not have a query or fragment")
    if not _BUCKET.fullmatch(parts.netloc):
        raise _bad_url(url, f"{parts.netloc!r} is not a valid S3 bucket name")
    return S3Storage(
        bucket=parts.netloc,
        prefix=_prefix(url, parts.path),
        endpoint_url=settings.s3_endpoint_url or None,
        region=settings.s3_region,
        **_credentials(settings),
    )


def _prefix(url: str, path: str) -> str:
    segments = [segment for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise _bad_url(url, "the prefix must not contain '.' or '..'")
    return "/".join(segments)


class _Credentials(TypedDict):
    access_key_id: str | None
    secret_access_key: str | None


def _credentials(settings: Settings) -> _Credentials:
    key_id = settings.s3_access_key_id or None
    secret = settings.s3_secret_access_key
    secret_value = secret.get_secret_value() if secret is not None else None
    if bool(key_id) != bool(secret_value):
        raise ValueError(
            "set both VIDARENA_S3_ACCESS_KEY_ID and VIDARENA_S3_SECRET_ACCESS_KEY, or neither "
            "(to use boto3's own credential chain: AWS_* variables, profile, instance role)"
        )
    return {"access_key_id": key_id, "secret_access_key": secret_value or None}


def _bad_url(url: str, problem: str) -> ValueError:
    shown = "<hidden: contains '@'>" if "@" in url else repr(url)  # never echo inline credentials
    return ValueError(
        f"VIDARENA_STORAGE_URL={shown} is invalid: {problem}; use a local folder path "
        "(default var/media) or s3://bucket/optional/prefix"
    )


def object_response(
    storage: Storage, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Response:
    """Serve `key` through the app, cacheable forever. Raises ObjectNotFoundError (map it to 404).

    Local: FileResponse (Range requests, ETag, sendfile). Other backends: streamed chunks.
    """
    headers = {"Cache-Control": CACHE_CONTROL}
    if isinstance(storage, LocalStorage):
        path = storage.path(key)
        if not path.is_file():  # FileResponse would only fail mid-response
            raise ObjectNotFoundError(key, str(storage.root))
        return FileResponse(path, media_type=media_type(key), headers=headers)
    chunks = storage.iter_bytes(key, chunk_size=chunk_size)
    headers["ETag"] = f'"{sha256_of(key)}"'
    return StreamingResponse(chunks, media_type=media_type(key), headers=headers)
