"""API shapes of the tenants domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import JsonEnum, RequestBody


class Scope(StrEnum):
    jobs_write = "jobs:write"
    jobs_read = "jobs:read"
    admin = "admin"


DEFAULT_SCOPES = (Scope.jobs_write, Scope.jobs_read)
# Every scope a tenant's key or JWT may carry; operator rights are never a scope.
TENANT_SCOPES = frozenset(scope.value for scope in Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant from authentication, never from the request body.

    The operator (admin token or operator key) has no tenant and acts on every tenant;
    nothing else is ever an operator, whatever its scopes or token claims say.
    """

    tenant_id: str
    scopes: frozenset[str]
    key_id: str | None = None
    operator: bool = False

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes or Scope.admin.value in self.scopes

    def manages(self, tenant_id: str) -> bool:
        """May administer this tenant: the operator, or an admin of that very tenant."""
        if self.operator:
            return True
        is_admin = Scope.admin.value in self.scopes
        return is_admin and bool(self.tenant_id) and self.tenant_id == tenant_id


OPERATOR = Principal(tenant_id="", scopes=frozenset({Scope.admin.value}), operator=True)


class TenantCreated(BaseModel):
    """What `jobgate tenants create --json` prints; the secrets are shown only once."""

    tenant_id: str
    api_key: str
    webhook_secret: str


# --- Admin API shapes -------------------------------------------------------------------


class TenantCreate(RequestBody):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scopes: list[JsonEnum[Scope]] = Field(
        default_factory=lambda: list(DEFAULT_SCOPES), description="Scopes of the first API key."
    )


class TenantPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    created_at: datetime


class TenantList(BaseModel):
    data: list[TenantPublic]


class ApiKeyCreate(RequestBody):
    model_config = ConfigDict(extra="forbid")

    scopes: list[JsonEnum[Scope]] = Field(
        default_factory=lambda: list(DEFAULT_SCOPES), min_length=1
    )
    name: str | None = Field(default=None, max_length=200)


class ApiKeyPublic(BaseModel):
    """A key without its secret part: the prefix identifies it."""

    id: str
    tenant_id: str
    prefix: str
    scopes: list[str]
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    api_key: str = Field(description="The whole key, shown only now.")


class ApiKeyList(BaseModel):
    data: list[ApiKeyPublic]


class WebhookSecretPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    created_at: datetime
    revoked_at: datetime | None


class WebhookSecretCreated(WebhookSecretPublic):
    secret: str = Field(description="The whsec_ secret, shown only now.")


class WebhookSecretList(BaseModel):
    data: list[WebhookSecretPublic]
