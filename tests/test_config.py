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


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("admin_password", "x"),
        ("admin_password", "11 letters!"),
        ("secret_key", "k" * 31),
        ("secret_key_previous", "p" * 31),
    ],
)
def test_production_refuses_short_passwords_and_keys(tmp_path, name, value):
    enough = {"admin_password": "a" * 12, "secret_key": "s" * 32, "secret_key_previous": "p" * 32}
    Settings(_env_file=None, env="production", var_dir=tmp_path, **enough)
    with pytest.raises(ValidationError, match=f"VIDARENA_{name.upper()} is {len(value)} char"):
        Settings(_env_file=None, env="production", var_dir=tmp_path, **enough | {name: value})
    Settings(_env_file=None, env="development", var_dir=tmp_path, **enough | {name: value})


def test_api_docs_are_off_in_production_unless_asked_for():
    assert Settings(_env_file=None, env="development").api_docs_enabled
    production = {"env": "production", "admin_password": "a" * 12, "secret_key": "s" * 32}
    assert not Settings(_env_file=None, **production).api_docs_enabled
    assert Settings(_env_file=None, **production, api_docs=True).api_docs_enabled
