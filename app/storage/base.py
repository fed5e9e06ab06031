"""The storage interface, content-hash keys and errors shared by every backend.

A key is `<first 2 hex>/<sha256 hex><suffix>`, e.g. `3f/3fa9…c1.gif`: the content's own hash, so it
reveals nothing about arms or prompts, the same bytes always land on the same key (put is
idempotent), and the one-level shard keeps a local folder at ≤ 1/256 of the objects per directory.
The layout is identical on disk and in S3 (under the URL's prefix), so `aws s3 sync var/media
s3://bucket/prefix` moves a local store to S3 unchanged.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

DEFAULT_CHUNK_SIZE = 256 * 1024
# Keys never change content, so clients and proxies may cache them forever.
CACHE_CONTROL = "public, max-age=31536000, immutable"

_SUFFIX = re.compile(r"\.[a-z0-9]{1,10}")
# fullmatch, not `$`: `$` would accept a trailing newline. The shard must repeat the hash's start.
_KEY = re.compile(r"(?P<shard>[0-9a-f]{2})/(?P=shard)[0-9a-f]{62}(?P<suffix>\.[a-z0-9]{1,10})")
# Explicit for the media we serve; the system mimetypes table differs between machines.
_MEDIA_TYPES = {
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".json": "application/json",
    ".csv": "text/csv",
}


class StorageError(Exception):
    """Storage is unreachable or refused an operation (the message says which and why)."""


class InvalidKeyError(StorageError, ValueError):
    """Not a content-hash key; raised before any file or network access (stops path traversal)."""


class ObjectNotFoundError(StorageError, KeyError):
    """No object under this (valid) key."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(key)
        self.key = key
        self.message = f"no stored object {key!r} in {where}"

    def __str__(self) -> str:
        # KeyError's own __str__ would show the repr of the key instead of the message.
        return self.message


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    sha256: str
    size: int


def check_suffix(suffix: object) -> str:
    if not isinstance(suffix, str) or not _SUFFIX.fullmatch(suffix):
        raise InvalidKeyError(f"invalid suffix {suffix!r}: expected a dot and 1-10 of [a-z0-9]")
    return suffix


def check_key(key: object) -> str:
    """Return `key` if it has the content-hash form, else raise InvalidKeyError."""
    return _parse(key)[0]


def _parse(key: object) -> re.Match[str]:
    match = _KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise InvalidKeyError(
            f"invalid storage key {key!r}: expected '<ab>/<sha256 hex starting ab><.suffix>'"
        )
    return match


def key_for(sha256_hex: str, *, suffix: str = ".gif") -> str:
    return check_key(f"{sha256_hex[:2]}/{sha256_hex}{check_suffix(suffix)}")


def describe(data: bytes, *, suffix: str = ".gif") -> StoredObject:
    """The StoredObject `put(data, suffix=suffix)` would return, computed without storing."""
    digest = hashlib.sha256(data).hexdigest()
    return StoredObject(key=key_for(digest, suffix=suffix), sha256=digest, size=len(data))


def media_type(key: str) -> str:
    """The Content-Type to serve `key` with, from its suffix."""
    suffix = _parse(key)["suffix"]
    guessed = _MEDIA_TYPES.get(suffix) or mimetypes.guess_type(f"x{suffix}")[0]
    return guessed or "application/octet-stream"


def sha256_of(key: str) -> str:
    """The content hash a key names (usable as a strong ETag)."""
    match = _parse(key)
    return match[0][3 : match.start("suffix")]


class ObjectStream(Protocol):
    """What `Storage.open` returns: a file opened "rb", or an S3 object's streaming body."""

    def read(self, size: int = ..., /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


class Storage(ABC):
    """Content-addressed object storage. Every method validates the key before touching storage."""

    def put(self, data: bytes | bytearray | memoryview, *, suffix: str = ".gif") -> StoredObject:
        """Store `data` under its content hash; storing the same bytes again is a no-op."""
        if not isinstance(data, bytes):
            data = bytes(data)  # bytearray/memoryview; hashing and uploads want one immutable copy
        obj = describe(data, suffix=suffix)
        self._put(obj, data)
        return obj

    @abstractmethod
    def _put(self, obj: StoredObject, data: bytes) -> None:
        """Write `data` under `obj.key` atomically: readers see all of it or nothing."""

    @abstractmethod
    def open(self, key: str) -> ObjectStream:
        """A readable binary stream (close it); raises ObjectNotFoundError at once if missing."""

    def iter_bytes(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Chunks of the object. Opens eagerly, so a missing key raises here, not mid-response."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return _chunks(self.open(key), chunk_size)

    def read(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""

    def url(self, key: str, *, expires: int = 3600) -> str | None:
        """A direct download URL valid `expires` seconds, or None: stream it through the app."""
        check_key(key)
        return None

    @abstractmethod
    def check(self) -> None:
        """Health check: return None, or raise StorageError saying what is wrong."""


def _chunks(stream: ObjectStream, chunk_size: int) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(chunk_size):
            yield chunk
