"""Storage against real backends: a temp folder and a real S3 HTTP server (moto), no mocks."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.config import Settings
from app.storage import (
    CACHE_CONTROL,
    InvalidKeyError,
    LocalStorage,
    ObjectNotFoundError,
    S3Storage,
    Storage,
    StorageError,
    check_key,
    describe,
    get_storage,
    media_type,
    object_response,
)
from app.storage import local as local_module
from tests.kit.s3 import REGION, running_s3_server, s3_client, s3_settings

BUCKET = "vidarena-test"
GIF = b"GIF89a" + bytes(range(256)) * 40  # not a real GIF; storage never looks inside
MISSING_KEY = describe(b"never stored").key


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    with running_s3_server(BUCKET) as endpoint_url:
        yield endpoint_url


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return get_storage(Settings(storage_url=str(tmp_path / "media")))
    endpoint_url = request.getfixturevalue("s3_endpoint")
    prefix = f"t-{uuid.uuid4().hex[:12]}"  # isolates tests sharing the one bucket
    return get_storage(Settings(**s3_settings(endpoint_url, BUCKET, prefix=prefix)))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- keys -----------------------------------------------------------------------------------


def test_key_is_the_content_hash_sharded_by_its_first_two_hex_digits(storage: Storage) -> None:
    obj = storage.put(GIF)
    digest = hashlib.sha256(GIF).hexdigest()
    assert obj.sha256 == digest
    assert obj.size == len(GIF)
    assert obj.key == f"{digest[:2]}/{digest}.gif"
    assert storage.put(GIF, suffix=".webp").key == f"{digest[:2]}/{digest}.webp"


BAD_KEYS = [
    "../etc/passwd",
    "/etc/passwd",
    "ab/../../etc/passwd",
    MISSING_KEY.replace("/", "\\"),
    MISSING_KEY + "\x00",
    MISSING_KEY + "\n",  # `$` in a regex would let this through
    MISSING_KEY.upper(),
    MISSING_KEY.split("/")[1],  # unsharded
    "00/" + MISSING_KEY.split("/")[1],  # shard that does not match the hash
    MISSING_KEY.replace(".gif", ""),
    MISSING_KEY.replace(".gif", "./gif"),
    MISSING_KEY[:-5] + ".gif",  # hash too short
    "",
    None,
    b"ab/cd.gif",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_keys_not_of_content_hash_form_are_rejected_everywhere(storage: Storage, key) -> None:
    calls = [
        storage.open,
        storage.read,
        storage.exists,
        storage.size,
        storage.delete,
        storage.url,
        lambda k: storage.iter_bytes(k),
        media_type,
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError, match="invalid storage key"):
            call(key)
    assert issubclass(InvalidKeyError, ValueError)


@pytest.mark.parametrize("suffix", ["gif", ".GIF", "./gif", ".", ".toolongsuffix", "/.gif", ""])
def test_bad_suffix_is_rejected_before_storing(storage: Storage, suffix: str) -> None:
    with pytest.raises(InvalidKeyError, match="invalid suffix"):
        storage.put(GIF, suffix=suffix)


def test_check_key_accepts_what_put_returns() -> None:
    assert check_key(describe(GIF).key) == describe(GIF).key


# --- put / read / stream --------------------------------------------------------------------


def test_round_trip_read_open_and_stream(storage: Storage) -> None:
    data = os.urandom(300_000)
    obj = storage.put(data)
    assert storage.read(obj.key) == data
    with storage.open(obj.key) as stream:
        assert stream.read() == data
    chunks = list(storage.iter_bytes(obj.key, chunk_size=64 * 1024))
    assert b"".join(chunks) == data
    assert max(map(len, chunks)) <= 64 * 1024
    assert len(chunks) >= 5


def test_bytes_like_and_empty_data(storage: Storage) -> None:
    assert storage.read(storage.put(bytearray(b"abc")).key) == b"abc"
    assert storage.read(storage.put(memoryview(b"xyz")).key) == b"xyz"
    empty = storage.put(b"")
    assert (empty.size, storage.read(empty.key), storage.exists(empty.key)) == (0, b"", True)


def test_exists_size_delete(storage: Storage) -> None:
    obj = storage.put(GIF)
    assert storage.exists(obj.key)
    assert storage.size(obj.key) == len(GIF)
    storage.delete(obj.key)
    assert not storage.exists(obj.key)
    storage.delete(obj.key)  # missing is not an error
    storage.delete(MISSING_KEY)


def test_put_is_idempotent(storage: Storage) -> None:
    first = storage.put(GIF)
    assert storage.put(GIF) == first
    assert storage.read(first.key) == GIF


def test_concurrent_puts_of_the_same_bytes(storage: Storage) -> None:
    data = os.urandom(200_000)
    results, errors = [], []

    def put() -> None:
        try:
            results.append(storage.put(data))
        except Exception as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert storage.read(results[0].key) == data


def test_missing_objects(storage: Storage) -> None:
    assert not storage.exists(MISSING_KEY)
    for call in (storage.open, storage.read, storage.size, storage.iter_bytes):
        with pytest.raises(ObjectNotFoundError) as info:
            call(MISSING_KEY)  # iter_bytes too: it opens eagerly
        assert info.value.key == MISSING_KEY
        assert str(info.value).startswith(f"no stored object {MISSING_KEY!r} in ")
    assert issubclass(ObjectNotFoundError, KeyError)


def test_bad_chunk_size(storage: Storage) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        storage.iter_bytes(storage.put(GIF).key, chunk_size=0)


def test_check_passes_on_a_working_store(storage: Storage) -> None:
    assert storage.check() is None


# --- urls and serving -----------------------------------------------------------------------


def test_url_is_presigned_on_s3_and_none_locally(storage: Storage) -> None:
    obj = storage.put(GIF)
    url = storage.url(obj.key, expires=60)
    if isinstance(storage, LocalStorage):
        assert url is None
        return
    assert "X-Amz-Signature=" in url
    assert obj.key.split("/")[1] in url  # the content hash; nothing about arms or prompts
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == GIF
        assert response.headers["Content-Type"] == "image/gif"
        assert response.headers["Cache-Control"] == CACHE_CONTROL
    with pytest.raises(ValueError, match="expires"):
        storage.url(obj.key, expires=8 * 24 * 3600)


def test_object_response_through_fastapi(storage: Storage) -> None:
    obj = storage.put(GIF)
    api = FastAPI()

    @api.get("/media/{key:path}")
    def media(key: str):
        return object_response(storage, key)

    with TestClient(api, raise_server_exceptions=False) as client:
        response = client.get(f"/media/{obj.key}")
        assert response.status_code == 200
        assert response.content == GIF
        assert response.headers["content-type"] == "image/gif"
        assert response.headers["cache-control"] == CACHE_CONTROL
        assert "etag" in response.headers
    with pytest.raises(ObjectNotFoundError):
        object_response(storage, MISSING_KEY)
    with pytest.raises(InvalidKeyError):
        object_response(storage, "../../etc/passwd")


def test_media_type() -> None:
    digest = "ab" + "0" * 62
    assert media_type(f"ab/{digest}.gif") == "image/gif"
    assert media_type(f"ab/{digest}.mp4") == "video/mp4"
    assert media_type(f"ab/{digest}.zzz9") == "application/octet-stream"


# --- local backend --------------------------------------------------------------------------


def test_local_folder_is_created_on_first_use_with_no_temp_files_left(tmp_path: Path) -> None:
    root = tmp_path / "var" / "media"
    storage = get_storage(Settings(var_dir=tmp_path / "var"))  # the default storage_url
    assert isinstance(storage, LocalStorage)
    assert storage.root == root
    assert not root.exists()
    obj = storage.put(GIF)
    storage.put(GIF)
    assert files_under(root) == [obj.key]
    assert storage.path(obj.key) == root / obj.key
    assert storage.path(obj.key).stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_local_put_failure_leaves_neither_object_nor_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    # Fault injection at the OS boundary: the disk fails after the temp file has data in it.
    storage = LocalStorage(tmp_path)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_module.os, failing, fail)
    with pytest.raises(StorageError, match="No space left"):
        storage.put(GIF)
    monkeypatch.undo()
    assert files_under(tmp_path) == []
    assert not storage.exists(describe(GIF).key)
    assert storage.put(GIF) == describe(GIF)  # and a retry succeeds


def test_local_damaged_object_is_rewritten(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    obj = storage.put(GIF)
    storage.path(obj.key).write_bytes(GIF[:10])  # e.g. truncated by hand or a bad restore
    storage.put(GIF)
    assert storage.read(obj.key) == GIF


def test_local_check_reports_an_unusable_folder(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(StorageError, match=r"not a writable folder.*VIDARENA_STORAGE_URL"):
        LocalStorage(not_a_folder).check()


def test_local_file_url_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_storage(Settings(storage_url=f"file://{tmp_path}")).root == tmp_path
    monkeypatch.chdir(tmp_path)
    storage = get_storage(Settings(storage_url="media"))
    assert storage.root == tmp_path / "media"  # absolute: a later chdir cannot move it


# --- S3 backend -----------------------------------------------------------------------------


def test_s3_objects_live_under_the_prefix_with_metadata(s3_endpoint: str) -> None:
    storage = get_storage(Settings(**s3_settings(s3_endpoint, BUCKET, prefix="/a//b/")))
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.location) == (
        BUCKET,
        "a/b",
        f"s3://{BUCKET}/a/b",
    )
    obj = storage.put(GIF)
    head = s3_client(s3_endpoint).head_object(Bucket=BUCKET, Key=f"a/b/{obj.key}")
    assert head["ContentLength"] == len(GIF)
    assert head["ContentType"] == "image/gif"
    assert head["CacheControl"] == CACHE_CONTROL


def test_s3_without_prefix(s3_endpoint: str) -> None:
    storage = get_storage(Settings(**s3_settings(s3_endpoint, BUCKET)))
    obj = storage.put(b"no prefix")
    s3_client(s3_endpoint).head_object(Bucket=BUCKET, Key=obj.key)
    storage.delete(obj.key)


def test_s3_check_reports_a_missing_bucket(s3_endpoint: str) -> None:
    storage = get_storage(Settings(**s3_settings(s3_endpoint, "no-such-bucket")))
    with pytest.raises(StorageError, match="no-such-bucket"):
        storage.check()


def test_s3_unreachable_endpoint_is_a_storage_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = S3Storage(
        bucket=BUCKET,
        endpoint_url=f"http://127.0.0.1:{port}",
        region=REGION,
        access_key_id="x",
        secret_access_key="y",
        connect_timeout=1,
        max_attempts=1,  # retries only add backoff here
    )
    with pytest.raises(StorageError, match="VIDARENA_S3_ENDPOINT_URL"):
        storage.check()
    with pytest.raises(StorageError):
        storage.put(GIF)


def test_repr_shows_no_secret(s3_endpoint: str) -> None:
    storage = get_storage(Settings(**s3_settings(s3_endpoint, BUCKET, prefix="p")))
    assert "testing" not in repr(storage)
    assert f"s3://{BUCKET}/p" in repr(storage)


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://", "not a valid S3 bucket name"),
        ("s3:///prefix", "not a valid S3 bucket name"),
        ("s3://Bad_Bucket", "not a valid S3 bucket name"),
        ("s3://user:secret@bucket", "VIDARENA_S3_ACCESS_KEY_ID"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket?versioning=1", "query"),
        ("gs://bucket", "scheme 'gs'"),
        ("http://minio:9000/bucket", "scheme 'http'"),
        ("   ", "empty"),
    ],
)
def test_bad_storage_url(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="VIDARENA_STORAGE_URL") as info:
        get_storage(Settings(storage_url=url))
    assert problem in str(info.value)
    assert "s3://bucket/optional/prefix" in str(info.value)
    assert "secret" not in str(info.value)


def test_half_configured_credentials() -> None:
    settings = Settings(storage_url="s3://bucket", s3_access_key_id="only-the-id")
    with pytest.raises(ValueError, match="VIDARENA_S3_SECRET_ACCESS_KEY"):
        get_storage(settings)
