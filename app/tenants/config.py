"""JWT bearer token settings (`JOBGATE_JWT_*`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from app.core.config import SettingsGroup


class JwtSettings(SettingsGroup):
    """RFC 9068 access tokens beside API keys: keys from a JWKS URL (RS/PS/ES/EdDSA) and/or
    a shared HS256 secret; unset both to accept API keys only."""

    env_prefix: ClassVar[str] = "JWT_"

    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = None
    hs256_secret: str | None = None
    tenant_claim: str = "tenant_id"
    leeway_seconds: int = Field(default=30, ge=0, le=600)
    # A stolen token is good for at most this long: longer `exp - iat` (or no `iat`) is a 401.
    max_lifetime_seconds: int = Field(default=86_400, ge=60)
    jwks_cache_seconds: int = Field(default=300, ge=1)
    jwks_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _keys_need_issuer_and_audience(self) -> JwtSettings:
        if (self.jwks_url or self.hs256_secret) and not (self.issuer and self.audience):
            raise ValueError("JWT keys are configured: set JOBGATE_JWT_ISSUER and _AUDIENCE too")
        return self
