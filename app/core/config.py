"""Settings shared by every package, and the groups core itself owns.

The root `Settings` (app/settings.py) nests one `SettingsGroup` per domain and is read once,
at the entry point; each component is handed only its group. Every group keeps the flat
`JOBGATE_*` variable names the gateway has always documented: a group names the prefix its
fields share (`env_prefix`) and spells out any field whose variable does not follow it
(`env_names`), so `JOBGATE_SMTP_HOST` lands on `settings.smtp.host`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_WRANGLER_CONFIG = REPO_ROOT / "wrangler.jsonc"
DEFAULT_ALEMBIC_INI = REPO_ROOT / "alembic.ini"
ENV_PREFIX = "JOBGATE_"
# Placeholder that signals "no key configured": fine for development, refused elsewhere.
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"
MIN_SECRET_KEY_CHARS = 16


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class SettingsGroup(BaseModel):
    """One domain's settings: a plain model (it never reads the environment itself)."""

    # A misspelt field in code or tests is an error, not a silently ignored keyword.
    model_config = ConfigDict(extra="forbid")

    # Variable of field `name`: JOBGATE_ + env_names[name], else + env_prefix + NAME.
    env_prefix: ClassVar[str] = ""
    env_names: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def env_var(cls, name: str) -> str:
        suffix = cls.env_names.get(name, f"{cls.env_prefix}{name}")
        return f"{ENV_PREFIX}{suffix}".upper()


class RootSettings(BaseSettings):
    """A process's settings: groups (and a few plain fields), read by `FlatEnvSource`.

    Build it once at the entry point and hand each component its group.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments win over the environment; no .env or secrets directory is read.
        return init_settings, FlatEnvSource(settings_cls)

    @classmethod
    def env_vars(cls) -> dict[str, tuple[str, str | None]]:
        """Every variable read: name -> (root field, group field or None)."""
        return {name: (root, field) for name, root, field, _ in settings_variables(cls)}

    def updated(self, **groups: Mapping[str, Any]) -> Self:
        """A copy with some fields of some groups changed, each group validated again:
        `settings.updated(smtp={"port": 2525})`."""
        changes: dict[str, Any] = {}
        for name, values in groups.items():
            group = getattr(self, name)
            changes[name] = type(group).model_validate({**group.model_dump(), **values})
        return self.model_copy(update=changes)


def settings_variables(
    settings_cls: type[BaseSettings],
) -> Iterator[tuple[str, str, str | None, FieldInfo]]:
    """(variable, root field, group field or None, field info) for every setting."""
    for root, info in settings_cls.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, SettingsGroup):
            for name, field in group.model_fields.items():
                yield group.env_var(name), root, name, field
        else:
            yield f"{ENV_PREFIX}{root}".upper(), root, None, info


class FlatEnvSource(EnvSettingsSource):
    """Reads each setting from its one documented variable and nothing else (no JSON blob
    named after a group, no `__`-nested names); case-insensitive like the default source,
    and JSON-decoding complex fields such as the admission watermarks."""

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for variable, root, name, field in settings_variables(self.settings_cls):
            raw = self.env_vars.get(variable.lower())
            if raw is None:
                continue
            key = name or root
            value = self.prepare_field_value(key, field, raw, self.field_is_complex(field))
            if name is None:
                data[root] = value
            else:
                data.setdefault(root, {})[name] = value
        return data


class DatabaseSettings(SettingsGroup):
    env_names: ClassVar[Mapping[str, str]] = {
        "url": "DATABASE_URL",
        "sqlite_synchronous": "SQLITE_SYNCHRONOUS",
        "pool_size": "DB_POOL_SIZE",
        "schema_name": "DATABASE_SCHEMA",
        "alembic_ini": "ALEMBIC_INI",
    }

    url: str = "sqlite:///./jobgate.db"
    # SQLite `synchronous` pragma: FULL fsyncs every commit so a 202 survives power loss too.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    pool_size: int = Field(default=10, ge=1, le=200)
    # PostgreSQL schema put first on the search_path (tests and benchmarks run in a fresh one).
    schema_name: str | None = None
    # Where `jobgate db upgrade` finds the migrations (an installed package has no repo root).
    alembic_ini: Path = DEFAULT_ALEMBIC_INI


class HttpSettings(SettingsGroup):
    """HTTP server (`jobgate serve`/`dev`, app/core/server.py) and request limits."""

    env_prefix: ClassVar[str] = "HTTP_"
    env_names: ClassVar[Mapping[str, str]] = {
        "host": "HOST",
        "port": "PORT",
        "log_level": "LOG_LEVEL",
        "forwarded_allow_ips": "FORWARDED_ALLOW_IPS",
        "max_request_bytes": "MAX_REQUEST_BYTES",
        "public_url": "PUBLIC_URL",
    }

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
    # Where clients reach the gateway: the API document's `servers` entry.
    public_url: str = "http://127.0.0.1:8000"
    # A request line plus headers over this size answers 431; a head not complete this long
    # after the connection opened (or its first byte, on a kept-alive connection) answers
    # 408; idle kept-alive connections close after `keep_alive_seconds`; connections over
    # the cap answer 503 and close.
    max_header_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    # Addresses whose X-Forwarded-For / X-Forwarded-Proto are trusted (a reverse proxy's),
    # comma-separated, or `*`; the client address decides the failed-auth throttle.
    forwarded_allow_ips: str = "127.0.0.1"
    # Cap on any request body, checked while it streams in.
    max_request_bytes: int = Field(default=1_048_576, ge=1024)


class SecuritySettings(SettingsGroup):
    env_names: ClassVar[Mapping[str, str]] = {
        "secret_key": "SECRET_KEY",
        "admin_token": "ADMIN_TOKEN",
    }

    secret_key: str = DEV_SECRET_KEY
    admin_token: str | None = None

    @field_validator("secret_key")
    @classmethod
    def _secret_key_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("JOBGATE_SECRET_KEY must not be empty")
        return value

    def require_secret_key(self) -> None:
        """Refuse the development placeholder (and short keys): for `serve` and `consume`.

        Stored webhook secrets and shop keys are encrypted with this key; the placeholder is
        public, so a gateway started without a key would store them as good as plain text.
        """
        if self.secret_key == DEV_SECRET_KEY:
            raise ValueError(
                "JOBGATE_SECRET_KEY is not set: it encrypts stored webhook secrets and shop "
                f"keys; set it to {MIN_SECRET_KEY_CHARS}+ random characters (e.g. `python -c "
                '"import secrets; print(secrets.token_urlsafe(32))"`), or run `jobgate dev`'
            )
        if len(self.secret_key) < MIN_SECRET_KEY_CHARS:
            raise ValueError(
                f"JOBGATE_SECRET_KEY is too short: use {MIN_SECRET_KEY_CHARS}+ random characters"
            )
