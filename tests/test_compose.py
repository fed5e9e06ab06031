"""docker-compose.yml, the Dockerfiles and .env.example: parsed and checked here on every run;
validated by `docker compose config` (or Debian's `docker-compose`, which .ci/run installs) where
one is installed: no engine is needed for that, and none runs here. Without either that one test
skips locally and fails in CI."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.config import Settings
from tests.kit.paths import ROOT
from tests.kit.services import require_service

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")
SETTING = re.compile(r"\bVIDARENA_[A-Z0-9_]+\b")
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "SECRET_KEY", "ADMIN_PASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def filled_env() -> dict[str, str]:
    """.env.example with its required blanks filled in, as an operator would."""
    values = env_example()
    for name in REQUIRED_SECRETS:
        values[name] = f"{name.lower().replace('_', '-')}-for-tests"
    values["SECRET_KEY"] += "-32-characters-or-more"  # production refuses a shorter one
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (enough for this file)."""

    def one(match: re.Match[str]) -> str:
        body = match[0][2:-1]
        name, op, rest = re.match(r"([A-Z0-9_]+)(:?[-?])?(.*)", body).groups()  # type: ignore[union-attr]
        value = env.get(name, "")
        if op and op.endswith("-") and not value:
            return rest
        if op and op.endswith("?") and not value:
            raise AssertionError(f"{name} is required: {rest}")
        return value

    return VARIABLE.sub(one, text).replace("$$", "$")


# --- the services ---------------------------------------------------------------------------


def test_the_deployment_has_every_service_with_healthchecks(compose):
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "minio", "minio-init", "migrate", "web", "worker"}
    for name in ("postgres", "redis", "minio", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped", name
    for one_shot in ("minio-init", "migrate"):
        assert services[one_shot]["restart"] == "no"
        assert "healthcheck" not in services[one_shot]
    # Data lives in named volumes.
    for name, path in (
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("minio", "/data"),
    ):
        volume = next(v for v in services[name]["volumes"] if v.endswith(":" + path))
        assert volume.split(":")[0] in compose["volumes"]
    # Only the web app is published beyond the host's loopback.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert name == "web" or str(port).startswith("127.0.0.1:"), (name, port)


def test_migrations_run_once_before_web_and_workers(compose):
    services = compose["services"]
    assert services["migrate"]["command"] == ["vidarena", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["minio-init"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_minio_init_creates_the_bucket_the_app_uses(compose):
    init = compose["services"]["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(init["command"])
    assert "mc mb --ignore-existing" in script and "$$MINIO_BUCKET" in script
    web_env = compose["services"]["web"]["environment"]
    assert web_env["VIDARENA_STORAGE_URL"].startswith("s3://${MINIO_BUCKET")
    assert web_env["VIDARENA_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_web_runs_several_uvicorn_workers_with_shared_metrics(compose):
    web = compose["services"]["web"]
    command = web["command"]
    assert command[:2] == ["vidarena", "serve"] and "--workers" in command
    assert "--no-render-worker" in command and "0.0.0.0" in command
    assert web["environment"]["PROMETHEUS_MULTIPROC_DIR"] in web["tmpfs"]
    assert "/healthz" in " ".join(web["healthcheck"]["test"])


def test_web_processes_share_their_rate_limits_in_redis():
    """Every web process (and machine) counts joins and answers in one Redis database of its
    own, beside the broker's."""
    resolved = yaml.safe_load(interpolate(COMPOSE.read_text(), filled_env()))
    web = resolved["services"]["web"]["environment"]
    settings = Settings.model_validate(
        {
            "broker_url": web["VIDARENA_BROKER_URL"],
            "rate_limit_storage": web["VIDARENA_RATE_LIMIT_STORAGE"],
        }
    )
    assert settings.rate_limit_storage_url == "redis://redis:6379/1"
    assert settings.broker_url == "redis://redis:6379/0"


def test_gpu_workers_reserve_nvidia_gpus_and_take_one_each(compose):
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert worker["command"][:3] == ["python", "-m", "app.ops.gpuslot"]
    assert worker["command"][3:6] == ["--", "vidarena", "worker"]
    assert "container_name" not in worker  # `--scale worker=N` needs distinct names
    locks = worker["environment"]["GPU_LOCK_DIR"]
    assert any(v.endswith(":" + locks) for v in worker["volumes"])
    assert worker["environment"]["VIDARENA_WORKER_METRICS_PORT"] == "9101"
    assert "9101" in " ".join(worker["healthcheck"]["test"])
    assert worker["build"]["dockerfile"] == "Dockerfile.worker"


# --- variables ------------------------------------------------------------------------------


def test_every_vidarena_variable_is_a_setting():
    fields = {f"VIDARENA_{name.upper()}" for name in Settings.model_fields}
    for path in (COMPOSE, ENV_EXAMPLE, ROOT / "Dockerfile", ROOT / "Dockerfile.worker"):
        unknown = set(SETTING.findall(path.read_text())) - fields
        assert not unknown, f"{path.name} uses variables Settings does not have: {unknown}"


def test_env_example_documents_every_variable(compose):
    documented = env_example()
    used = {m["name"] for m in VARIABLE.finditer(COMPOSE.read_text())}
    assert used - set(documented) == set(), "compose reads variables .env.example lacks"
    assert set(documented) - used == set(), ".env.example has variables compose never reads"
    text = ENV_EXAMPLE.read_text()
    missing = [
        f"VIDARENA_{n.upper()}"
        for n in Settings.model_fields
        if f"VIDARENA_{n.upper()}" not in text
    ]
    assert not missing, f".env.example does not mention {missing}"
    # Prefixed names in .env would reconfigure `make run` and the tests in this checkout.
    assert not [name for name in documented if name.startswith("VIDARENA_")]
    for name in REQUIRED_SECRETS:
        assert documented[name] == "", f"{name} must be left for the operator to fill in"


def test_the_containers_settings_are_valid(compose):
    """The environment compose gives web and worker, with .env.example filled in, is accepted
    by Settings exactly as the containers will read it."""
    resolved = yaml.safe_load(interpolate(COMPOSE.read_text(), filled_env()))
    for name in ("web", "worker", "migrate"):
        environment = {k: str(v) for k, v in resolved["services"][name]["environment"].items()}
        values = {
            key.removeprefix("VIDARENA_").lower(): value
            for key, value in environment.items()
            if key.startswith("VIDARENA_")
        }
        settings = Settings.model_validate(values)
        assert settings.env == "production"
        assert settings.database_url.startswith("postgresql://vidarena:postgres-password-for")
        assert settings.broker_url == "redis://redis:6379/0"
        assert settings.storage_url == "s3://vidarena/media"
        assert settings.resolved_admin_password() == "admin-password-for-tests"
        assert settings.s3_secret_access_key.get_secret_value() == "minio-root-password-for-tests"


def test_missing_secrets_stop_compose_with_a_message():
    for name in REQUIRED_SECRETS:
        env = filled_env() | {name: ""}
        with pytest.raises(AssertionError, match=name):
            interpolate(COMPOSE.read_text(), env)


# --- images ---------------------------------------------------------------------------------


def test_dockerfiles_build_what_compose_runs():
    web = (ROOT / "Dockerfile").read_text()
    worker = (ROOT / "Dockerfile.worker").read_text()
    assert web.startswith("# syntax=docker/dockerfile:1") and "FROM python:3.12-slim" in web
    assert "torch" not in web.split("pip install", 1)[1].split("\n")[0]  # the web app has no torch
    assert "USER vidarena" in web and "USER vidarena" in worker  # not root
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:[\w.-]+-ubuntu24\.04", worker)
    assert "FROM ${CUDA_IMAGE}" in worker
    assert "download.pytorch.org/whl/cu" in worker and '".[worker]"' in worker
    # The CUDA torch goes in before the project, so `.[worker]` keeps it.
    assert worker.index("TORCH_INDEX_URL}") < worker.index('".[worker]"')
    for needed in ("app", "workers", "migrations", "alembic.ini"):
        assert f"COPY {needed}" in web and f"COPY {needed}" in worker
    for needed in ("templates", "static"):
        assert f"COPY {needed}" in web
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and "var/" in ignored and ".venv/" in ignored


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_validates(tmp_path: Path):
    cli = _compose_cli()
    if cli is None:
        require_service(
            "docker compose",
            "no `docker compose` plugin or `docker-compose` (apt-get install docker-compose); "
            "validation needs only the CLI, not an engine",
        )
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in filled_env().items()))
    base = [*cli, "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    ok = subprocess.run(
        [*base, "--env-file", str(env_file), "config"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)
    web = resolved["services"]["web"]["environment"]
    assert web["VIDARENA_SECRET_KEY"] == filled_env()["SECRET_KEY"]
    (tmp_path / "empty.env").write_text("")
    missing = subprocess.run(
        [*base, "--env-file", str(tmp_path / "empty.env"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "in .env" in missing.stderr
