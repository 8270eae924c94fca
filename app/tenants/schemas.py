"""API shapes of the tenants domain."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel


class Scope(StrEnum):
    jobs_write = "jobs:write"
    jobs_read = "jobs:read"
    admin = "admin"


DEFAULT_SCOPES = (Scope.jobs_write, Scope.jobs_read)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant from authentication, never from the request body."""

    tenant_id: str
    scopes: frozenset[str]
    key_id: str | None = None

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes or Scope.admin.value in self.scopes


class TenantCreated(BaseModel):
    """What `jobgate tenants create --json` prints; the secrets are shown only once."""

    tenant_id: str
    api_key: str
    webhook_secret: str
