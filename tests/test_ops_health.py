"""GET /healthz and GET /readyz on real databases, a real S3 server, and brokers that are down."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.kit.config import configured
from tests.kit.s3 import running_s3_server, s3_settings
from tests.kit.services import free_port


def test_healthz_answers_while_the_process_lives(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["cache-control"] == "no-store"


def test_readyz_reports_every_component_up(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "ok"
    components = report["components"]
    assert set(components) == {"database", "broker", "storage"}
    assert components["database"]["backend"] == ("sqlite" if settings.is_sqlite else "postgresql")
    assert components["broker"]["backend"] == "filesystem"
    assert components["storage"]["backend"] == "local"
    assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in components.values())
    assert response.headers["cache-control"] == "no-store"


def test_a_down_broker_is_named_with_a_503_and_no_password(settings):
    port = free_port()  # nothing listens there
    down = configured(settings, broker_url=f"redis://:hunter2pw@127.0.0.1:{port}/0")
    with TestClient(create_app(down)) as client:
        started = time.monotonic()
        response = client.get("/readyz")
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        report = response.json()
        assert report["status"] == "down"
        broker = report["components"]["broker"]
        assert broker["status"] == "down"
        assert "Connection" in broker["error"] and str(port) in broker["error"]
        assert report["components"]["database"]["status"] == "ok"
        assert report["components"]["storage"]["status"] == "ok"
        assert "hunter2pw" not in response.text
        # Evaluators need only the database and storage: a probe can say so.
        assert client.get("/readyz?require=database,storage").status_code == 200
        assert client.get("/readyz?require=broker").status_code == 503
        assert client.get("/readyz?require=disk").status_code == 422
        # Liveness does not depend on any of it.
        assert client.get("/healthz").status_code == 200


def test_an_unreachable_database_is_down_and_its_password_hidden(settings):
    url = f"postgresql://vidarena:pg-secret-pw@127.0.0.1:{free_port()}/nothing"
    with TestClient(create_app(configured(settings, database_url=url))) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    database = response.json()["components"]["database"]
    assert database["status"] == "down" and "OperationalError" in database["error"]
    assert "pg-secret-pw" not in response.text


def test_a_schema_behind_the_code_is_not_ready(settings, tmp_path):
    fresh = configured(settings, database_url=f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with TestClient(create_app(fresh)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["components"]["database"]["error"]
    assert "needs migrations" in error and "vidarena db upgrade" in error


def test_s3_storage_up_then_down(settings):
    with running_s3_server("vidarena-health") as endpoint:
        s3 = configured(settings, **s3_settings(endpoint, "vidarena-health", prefix="media"))
        app = create_app(s3)
        with TestClient(app) as client:
            up = client.get("/readyz")
            assert up.status_code == 200, up.text
            assert up.json()["components"]["storage"]["backend"] == "s3"
            missing = configured(settings, **s3_settings(endpoint, "no-such-bucket"))
            with TestClient(create_app(missing)) as other:
                response = other.get("/readyz")
                assert response.status_code == 503
                assert "NoSuchBucket" in response.json()["components"]["storage"]["error"] or (
                    "404" in response.json()["components"]["storage"]["error"]
                )
    # The server is gone now.
    with TestClient(app) as client:
        started = time.monotonic()
        response = client.get("/readyz")
        assert time.monotonic() - started < 5
    assert response.status_code == 503
    storage = response.json()["components"]["storage"]
    assert storage["status"] == "down" and "S3 health check failed" in storage["error"]
    assert "testing" not in storage["error"].replace("vidarena-health", "")  # no credentials


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_over_real_http(live_server, path):
    import httpx

    response = httpx.get(live_server + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-request-id"]
