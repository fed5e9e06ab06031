"""S3-compatible backend (AWS S3, MinIO, moto in tests), through boto3 directly.

boto3 rather than s3fs: clients are thread-safe and synchronous (Celery workers, sync endpoints),
presigned URLs are built in, and there is no fsspec instance/listing cache to return stale
`exists()` answers after another process writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from app.storage.base import (
    CACHE_CONTROL,
    ObjectNotFoundError,
    ObjectStream,
    Storage,
    StorageError,
    StoredObject,
    check_key,
    media_type,
)

if TYPE_CHECKING:  # stub-only package (the dev extra's boto3-stubs[s3]), absent at run time
    from mypy_boto3_s3 import S3Client

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 limit
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
# What to do about the usual failures, so the health check tells operators where to look.
_HINTS = {
    "NoSuchBucket": "create the bucket or fix VIDARENA_STORAGE_URL",
    "AccessDenied": "check VIDARENA_S3_ACCESS_KEY_ID / VIDARENA_S3_SECRET_ACCESS_KEY",
    "403": "check VIDARENA_S3_ACCESS_KEY_ID / VIDARENA_S3_SECRET_ACCESS_KEY",
    "InvalidAccessKeyId": "check VIDARENA_S3_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "check VIDARENA_S3_SECRET_ACCESS_KEY and VIDARENA_S3_REGION",
}


class S3Storage(Storage):
    """Objects at `s3://<bucket>/<prefix>/<key>`; the client is built on first use."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._region = region
        # None means boto3's own chain (AWS_* env, profile, instance role).
        self._credentials = (access_key_id, secret_access_key)
        self._timeouts = (connect_timeout, read_timeout)
        self._max_attempts = max_attempts

    def __repr__(self) -> str:
        return f"S3Storage({self.location!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @cached_property
    def client(self) -> S3Client:
        access_key_id, secret_access_key = self._credentials
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=self._region,
        )
        config = Config(
            signature_version="s3v4",
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
            retries={"max_attempts": self._max_attempts, "mode": "standard"},
            # Custom endpoints (MinIO, moto) rarely have wildcard DNS for bucket subdomains.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def object_name(self, key: str) -> str:
        """The S3 object key for a storage key (the prefix plus the key)."""
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _put(self, obj: StoredObject, data: bytes) -> None:
        if self._head(obj.key, action="put") == obj.size:
            return  # same key means same bytes: skip re-uploading megabytes
        with self._errors("put", obj.key):
            # A single PUT is atomic in S3: the key shows all of the object or nothing.
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.object_name(obj.key),
                Body=data,
                ContentType=media_type(obj.key),
                CacheControl=CACHE_CONTROL,
            )

    def open(self, key: str) -> ObjectStream:
        name = self.object_name(key)
        with self._errors("get", key):
            return self.client.get_object(Bucket=self.bucket, Key=name)["Body"]

    def exists(self, key: str) -> bool:
        return self._head(key, action="exists") is not None

    def size(self, key: str) -> int:
        size = self._head(key, action="size")
        if size is None:
            raise ObjectNotFoundError(key, self.location)
        return size

    def delete(self, key: str) -> None:
        name = self.object_name(key)
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=name)  # S3: missing is no error

    def url(self, key: str, *, expires: int = 3600) -> str | None:
        """A presigned GET URL. Signed locally: it does not check that the object exists."""
        name = self.object_name(key)
        if not 1 <= expires <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires must be 1..{MAX_PRESIGN_SECONDS} seconds, got {expires}")
        with self._errors("presign", key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=expires
            )

    def check(self) -> None:
        with self._errors("health check"):
            self.client.head_bucket(Bucket=self.bucket)

    def _head(self, key: str, *, action: str) -> int | None:
        """The object's size, or None when it does not exist."""
        name = self.object_name(key)
        try:
            with self._errors(action, key):
                return self.client.head_object(Bucket=self.bucket, Key=name)["ContentLength"]
        except ObjectNotFoundError:
            return None

    @contextlib.contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Turn botocore's exceptions into ours, so callers handle one family for any backend."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            if key is not None and code in _MISSING:
                raise ObjectNotFoundError(key, self.location) from None
            problem = f"{code} {error.get('Message', '')}".strip()
            raise StorageError(self._message(action, key, problem, _HINTS.get(code))) from exc
        except NoCredentialsError as exc:
            hint = "set VIDARENA_S3_ACCESS_KEY_ID and VIDARENA_S3_SECRET_ACCESS_KEY"
            raise StorageError(self._message(action, key, str(exc), hint)) from exc
        except BotoCoreError as exc:
            hint = "check VIDARENA_S3_ENDPOINT_URL and that the S3 server is up"
            raise StorageError(self._message(action, key, str(exc), hint)) from exc

    def _message(self, action: str, key: str | None, problem: str, hint: str | None) -> str:
        target = f"{key} in {self.location}" if key else self.location
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3 {action} failed for {target}{where}: {problem}" + (f"; {hint}" if hint else "")
