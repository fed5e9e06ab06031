"""Content-addressed object storage for clips and other media: a local folder or S3.

`get_storage(settings).put(gif_bytes)` returns `StoredObject(key='3f/3fa9…c1.gif', sha256, size)`;
keep the key in SQL, then hand browsers `storage.url(key)` (S3 presigned) or, when that is None,
a route returning `object_response(storage, key)`.
"""

from app.storage.base import (
    CACHE_CONTROL,
    DEFAULT_CHUNK_SIZE,
    InvalidKeyError,
    ObjectNotFoundError,
    Storage,
    StorageError,
    StoredObject,
    check_key,
    describe,
    media_type,
)
from app.storage.local import LocalStorage
from app.storage.s3 import S3Storage
from app.storage.service import get_storage, object_response

__all__ = [
    "CACHE_CONTROL",
    "DEFAULT_CHUNK_SIZE",
    "InvalidKeyError",
    "LocalStorage",
    "ObjectNotFoundError",
    "S3Storage",
    "Storage",
    "StorageError",
    "StoredObject",
    "check_key",
    "describe",
    "get_storage",
    "media_type",
    "object_response",
]
