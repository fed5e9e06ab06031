"""Typed settings: embedded defaults under var/, generated secrets, refusals outside development."""

from __future__ import annotations

import stat

import pytest
from pydantic import ValidationError

from app.config import PLACEHOLDER_SECRET, Settings


def test_embedded_defaults_live_under_var(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "SECRET_KEY", "ADMIN_PASSWORD"):
        monkeypatch.delenv(f"VIDARENA_{name}", raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url == "sqlite:///var/vidarena.sqlite"
    assert settings.broker_url == "filesystem://var/broker"
    assert settings.storage_url == "var/media"


def test_environment_variables_override(monkeypatch):
    monkeypatch.setenv("VIDARENA_DATABASE_URL", "postgresql://u@db/x")
    monkeypatch.setenv("VIDARENA_RENDER_LEASE_SECONDS", "42")
    settings = Settings(_env_file=None)
    assert settings.database_url == "postgresql://u@db/x"
    assert settings.render_lease_seconds == 42


def test_secret_key_is_generated_once_and_kept_private(tmp_path):
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", secret_key=None)
    first = settings.resolved_secret_key()
    assert len(first) >= 48
    assert Settings(_env_file=None, var_dir=tmp_path / "var").resolved_secret_key() == first
    mode = (tmp_path / "var" / "secret_key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_placeholder_secret_is_refused_outside_development():
    Settings(_env_file=None, env="development", secret_key=PLACEHOLDER_SECRET)
    with pytest.raises(ValidationError, match="VIDARENA_SECRET_KEY is the documented placeholder"):
        Settings(_env_file=None, env="production", secret_key=PLACEHOLDER_SECRET)


def test_production_needs_an_admin_password(tmp_path):
    settings = Settings(_env_file=None, env="production", var_dir=tmp_path, admin_password=None)
    with pytest.raises(ValueError, match="VIDARENA_ADMIN_PASSWORD must be set"):
        settings.resolved_admin_password()
    dev = Settings(_env_file=None, env="development", var_dir=tmp_path, admin_password=None)
    assert dev.resolved_admin_password() == dev.resolved_admin_password()
    assert (tmp_path / "admin_password").exists()
