"""A real S3-compatible HTTP server for tests: moto's ThreadedMotoServer on 127.0.0.1.

moto does not verify signatures, so any credentials work; these dummy ones are passed explicitly
so nothing falls back to a developer's real AWS profile. A test module wraps it as a fixture:

    @pytest.fixture(scope="session")
    def s3_endpoint():
        with running_s3_server("vidarena-test") as endpoint_url:
            yield endpoint_url
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"  # dummy: moto does not verify signatures
REGION = "us-east-1"


@contextmanager
def running_s3_server(bucket: str) -> Iterator[str]:
    """Start moto on a free port, create `bucket`, yield the endpoint URL; stop on exit."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        s3_client(endpoint_url).create_bucket(Bucket=bucket)
        yield endpoint_url
    finally:
        server.stop()


def s3_client(endpoint_url: str) -> Any:
    """A plain boto3 client on the test server, for arranging and inspecting state directly."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def s3_settings(endpoint_url: str, bucket: str, *, prefix: str = "") -> dict[str, Any]:
    """Keyword arguments for `Settings(...)` that point storage at the test server."""
    return {
        "storage_url": f"s3://{bucket}/{prefix}".rstrip("/"),
        "s3_endpoint_url": endpoint_url,
        "s3_region": REGION,
        "s3_access_key_id": ACCESS_KEY_ID,
        "s3_secret_access_key": SECRET_ACCESS_KEY,
    }
