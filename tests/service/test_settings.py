from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.settings import DEV_JWT_SECRET, ConfigurationError, Settings, load_settings

PRODUCTION_DB = "postgresql://app:pw@db:5432/app"
STRONG_SECRET = "x" * 40


def test_development_defaults_need_nothing() -> None:
    settings = Settings(_env_file=None)
    assert settings.uses_sqlite
    settings.require_secure()  # development: defaults are fine


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"database_url": PRODUCTION_DB}, "JWT_SECRET"),
        ({"jwt_secret": STRONG_SECRET}, "DATABASE_URL"),
        ({"jwt_secret": "short", "database_url": PRODUCTION_DB}, "JWT_SECRET"),
        (
            {
                "jwt_secret": STRONG_SECRET,
                "database_url": PRODUCTION_DB,
                "first_admin_email": "a@b.c",
            },
            "FIRST_ADMIN_PASSWORD",
        ),
    ],
)
def test_production_refuses_default_or_missing_secrets(
    overrides: dict[str, Any], named: str
) -> None:
    settings = Settings(app_env="production", **overrides)
    with pytest.raises(ConfigurationError, match=named) as info:
        settings.require_secure()
    assert "\n" not in str(info.value)  # one clear line


def test_production_with_real_secrets_starts() -> None:
    Settings(
        app_env="staging", jwt_secret=STRONG_SECRET, database_url=PRODUCTION_DB
    ).require_secure()


def test_the_process_refuses_to_start_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "DATABASE_"))}
    result = subprocess.run(
        [sys.executable, "-c", "from service.main import create_app; create_app()"],
        env=env | {"APP_ENV": "production", "DATABASE_URL": PRODUCTION_DB},
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode != 0
    assert "JWT_SECRET is the development default" in result.stderr


def test_secrets_never_appear_in_repr_or_dump() -> None:
    settings = Settings(jwt_secret=STRONG_SECRET, database_url=PRODUCTION_DB)
    for text in (repr(settings), str(settings.model_dump())):
        assert STRONG_SECRET not in text
        assert "app:pw" not in text


def test_secrets_are_read_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "JWT_SECRET").write_text(STRONG_SECRET)
    (tmp_path / "DATABASE_URL").write_text(PRODUCTION_DB)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = load_settings()
    assert settings.jwt_secret.get_secret_value() == STRONG_SECRET
    assert settings.database_url.get_secret_value() == "postgresql+asyncpg://app:pw@db:5432/app"


def test_environment_wins_over_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "JWT_SECRET").write_text("from-file-" + "y" * 30)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("JWT_SECRET", STRONG_SECRET)
    assert load_settings().jwt_secret.get_secret_value() == STRONG_SECRET


def test_unprefixed_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    settings = load_settings()
    assert settings.web_concurrency == 3
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trusted_proxies", "not-a-network"),
        ("oidc_algorithms", "HS256"),
        ("web_concurrency", "0"),
        ("jwt_algorithm", "RS256"),  # without a private key
        ("page_size_default", "500"),  # above PAGE_SIZE_MAX
    ],
)
def test_bad_values_are_refused(field: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(field.upper(), value)
    with pytest.raises(ValidationError):
        load_settings()


def test_env_example_lists_every_setting() -> None:
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    names = {
        line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line
    }
    missing = {name.upper() for name in Settings.model_fields} - names
    assert not missing, f".env.example does not document {sorted(missing)}"
    assert DEV_JWT_SECRET not in example
