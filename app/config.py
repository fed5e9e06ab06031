"""One typed settings object, read from `VIDARENA_*` environment variables (and `.env`)."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Refused as SECRET_KEY outside development: it is in the docs, so anyone could forge sessions.
PLACEHOLDER_SECRET = "change-me"  # noqa: S105 - the value we refuse, not a credential
# Shortest secrets production accepts: a guessable key forges every session and link.
MIN_SECRET_KEY = 32
MIN_ADMIN_PASSWORD = 12
REDIS_SCHEMES = ("redis://", "rediss://")


class Settings(BaseSettings):
    """Every field is documented in README.md (a test checks it)."""

    model_config = SettingsConfigDict(env_prefix="VIDARENA_", env_file=".env", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    var_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = ""
    storage_url: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    admin_password: SecretStr | None = None
    secret_key: SecretStr | None = None
    # The key before the last rotation: still accepted to verify, never used to sign.
    secret_key_previous: SecretStr | None = None
    session_max_age: int = Field(default=8 * 3600, ge=60)
    https_only: bool = False
    log_level: str = "INFO"
    # Reverse proxies whose X-Forwarded-For / -Proto `vidarena serve` believes (addresses or
    # networks, comma-separated; `*`: any peer). Empty: none, the peer's address is the client's.
    forwarded_allow_ips: str = ""
    # /docs, /redoc and /openapi.json; unset: on, except in production (Swagger UI and ReDoc
    # load their scripts from a CDN).
    api_docs: bool | None = None
    render_lease_seconds: int = Field(default=300, ge=1)
    render_max_retries: int = Field(default=3, ge=0, le=20)
    # Encoder processes per render worker for the post-render CPU stage (encode, measure,
    # upload, record), which overlaps the next clip's render; 0: the machine's cores less one
    # (the worker's own), at most 8 (see resolved_encode_workers).
    encode_workers: int = Field(default=0, ge=0, le=64)
    # torch.compile the UNet and VAE decoder on CUDA, paying the warm-up once per worker process.
    render_compile: bool = False
    # Queued clips of one arm a render worker claims together and denoises in one call (1: one
    # clip per call); a batch that runs out of GPU memory is rendered one clip at a time.
    render_batch: int = Field(default=1, ge=1, le=16)
    # A CLIP model (local folder or hub id) the render workers score each clip's frames against
    # its prompt with (the `text_similarity` measure, workers/measure_text.py); empty: off.
    clip_model: str = ""
    # Operations (app/ops): logs, metrics, rate limits.
    log_format: Literal["json", "text"] = "json"
    metrics_token: SecretStr | None = None
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    rate_limit_join_per_minute: int = Field(default=30, ge=0)
    rate_limit_submit_per_minute: int = Field(default=60, ge=0)
    # Where those limits count: `memory://` (each web process its own budgets) or a Redis URL
    # (`redis://host:6379/1`, `rediss://` for TLS: one budget shared by every web process). Empty:
    # the broker's Redis when the broker is Redis, else memory:// (see rate_limit_storage_url).
    rate_limit_storage: str = ""
    # Threads per web process for the (sync) endpoints; few, so they do not convoy on the GIL.
    web_threads: int = Field(default=8, ge=1, le=256)
    # Of those, how many may run the evaluator API (next pair, submit) at once: see in_rating_lane.
    rating_threads: int = Field(default=1, ge=1, le=256)
    # Clip bytes each web process keeps in memory for the media route (0: read storage each time).
    media_cache_mb: int = Field(default=64, ge=0, le=65536)
    # Requests of each class of work one web process takes at once; one more gets 503 with
    # Retry-After instead of queueing on threads, connections or locks (app/ops/bulkhead.py).
    concurrency_evaluator_session: int = Field(default=128, ge=1, le=10_000)
    concurrency_evaluator_public: int = Field(default=64, ge=1, le=10_000)
    concurrency_media: int = Field(default=256, ge=1, le=10_000)
    concurrency_admin: int = Field(default=32, ge=1, le=10_000)
    concurrency_events: int = Field(default=32, ge=1, le=10_000)
    concurrency_analysis: int = Field(default=4, ge=1, le=10_000)
    # Threads of the analysis lane: exports, the report, summaries and the robustness panel.
    analysis_threads: int = Field(default=2, ge=1, le=64)
    # How often each web process checks the open studies whose plan says stop = "when_decided"
    # (every primary hypothesis decided, or the vote budget spent); 0 turns the check off.
    stop_check_seconds: float = Field(default=10.0, ge=0, le=3600)

    @field_validator("rate_limit_storage")
    @classmethod
    def _known_rate_limit_storage(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("memory://", *REDIS_SCHEMES)):
            scheme = value.partition("://")[0] if "://" in value else value[:20]
            raise ValueError(
                f"VIDARENA_RATE_LIMIT_STORAGE must be memory:// or a redis:// (rediss://) URL, "
                f"not {scheme!r}"
            )
        return value

    @model_validator(mode="after")
    def _defaults_under_var(self) -> Settings:
        # Embedded default: everything lives under ./var/, nothing to install.
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'vidarena.sqlite'}"
        if not self.broker_url:
            self.broker_url = f"filesystem://{self.var_dir / 'broker'}"
        if not self.storage_url:
            self.storage_url = str(self.var_dir / "media")
        placeholder = (
            self.secret_key is not None and self.secret_key.get_secret_value() == PLACEHOLDER_SECRET
        )
        if placeholder and self.env != "development":
            raise ValueError(
                f"VIDARENA_SECRET_KEY is the documented placeholder {PLACEHOLDER_SECRET!r}; set a "
                "long random value: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        if self.env == "production":
            self._refuse_short_secrets()
        return self

    def _refuse_short_secrets(self) -> None:
        for name, value, minimum in (
            ("VIDARENA_SECRET_KEY", self.secret_key, MIN_SECRET_KEY),
            ("VIDARENA_SECRET_KEY_PREVIOUS", self.secret_key_previous, MIN_SECRET_KEY),
            ("VIDARENA_ADMIN_PASSWORD", self.admin_password, MIN_ADMIN_PASSWORD),
        ):
            length = len(value.get_secret_value()) if value is not None else 0
            if 0 < length < minimum:  # unset or empty: generated, or refused elsewhere
                raise ValueError(
                    f"{name} is {length} characters long; production needs at least {minimum}: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
                )

    @property
    def api_docs_enabled(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.env != "production"

    @property
    def rate_limit_storage_url(self) -> str:
        """Where the join and submit limits count: the setting, else the broker's Redis when the
        broker is Redis (scale-out shares its limits without another setting), else memory://."""
        if self.rate_limit_storage:
            return self.rate_limit_storage
        return self.broker_url if self.broker_url.startswith(REDIS_SCHEMES) else "memory://"

    @property
    def resolved_encode_workers(self) -> int:
        """VIDARENA_ENCODE_WORKERS, or for 0 the cores this process may use less one, 1..8."""
        if self.encode_workers:
            return self.encode_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(8, (cores or 1) - 1))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in ./var/secret_key."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return self._generated("secret_key", nbytes=48)

    def previous_secret_keys(self) -> tuple[str, ...]:
        """Keys accepted for verification only, during a rotation (newest first)."""
        previous = self.secret_key_previous
        return (previous.get_secret_value(),) if previous and previous.get_secret_value() else ()

    def resolved_admin_password(self) -> str:
        """The configured password; in development one generated once into ./var/admin_password."""
        if self.admin_password is not None and self.admin_password.get_secret_value():
            return self.admin_password.get_secret_value()
        if self.env == "production":
            raise ValueError("VIDARENA_ADMIN_PASSWORD must be set in production")
        return self._generated("admin_password", nbytes=12)

    def _generated(self, name: str, *, nbytes: int) -> str:
        path = self.var_dir / name
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(nbytes)
        # Created 0600 so no other user of the machine can read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(value)
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
