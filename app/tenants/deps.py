"""Authentication dependencies: `Authorization: Bearer <api key | JWT | operator credential>`.

Two kinds of caller administer:
- the *operator*: the `ADMIN_TOKEN` setting or an operator key (`jgo_...`, made by
  `jobgate operators create`). It belongs to no tenant, acts on every tenant, and cannot
  submit or read jobs.
- a tenant's `admin` scope (API key `jg_...` or JWT): that tenant only. Another tenant's
  resources answer 404, exactly like ones that do not exist.
A JWT is always a tenant's credential, whatever its claims: it is never the operator.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock
from app.core.db import SessionMaker
from app.core.deps import SessionDep, component
from app.core.errors import Forbidden, NotFound, ServiceUnavailable, Unauthorized
from app.core.security import OPERATOR_KEY_PREFIX, api_key_prefix
from app.observability import logs
from app.tenants import service as tenants_service
from app.tenants.config import JwtSettings
from app.tenants.models import Tenant
from app.tenants.schemas import OPERATOR, Principal, Scope
from app.tenants.service import ApiKeyCache
from app.tenants.tokens import InvalidToken, JwtVerifier, KeysUnavailable, is_jwt_shaped

INVALID_TOKEN = 'Bearer error="invalid_token"'


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("send Authorization: Bearer <api key>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <api key>'")
    return token.strip()


class Credentials:
    """What authentication needs of the process: the key cache, the operator's token and the
    JWT verifier (built on first use: it holds the JWKS cache)."""

    def __init__(
        self, jwt: JwtSettings, admin_token: str | None, clock: Clock, key_cache: ApiKeyCache
    ) -> None:
        self.key_cache = key_cache
        self.admin_token = admin_token
        self._jwt = jwt
        self._clock = clock
        self._verifier: JwtVerifier | None = None
        self._verifier_built = False

    def jwt_verifier(self) -> JwtVerifier | None:
        if not self._verifier_built:
            self._verifier = JwtVerifier.from_settings(self._jwt, self._clock)
            self._verifier_built = True
        return self._verifier


CredentialsDep = Annotated[Credentials, Depends(component("credentials"))]


async def authenticate(request: Request, credentials: CredentialsDep) -> Principal:
    """Who is calling, from any accepted bearer credential; 401 otherwise.

    A credential not in the key cache is looked up in a read-only session: on SQLite the
    request's own session would take the write lock at that first read, and wait for the
    group commit's writer (up to 1.5 s under load) just to authenticate.
    """
    reader: SessionMaker = request.app.state.reader
    async with reader() as session:
        return await authenticate_token(bearer_token(request), session, credentials)


async def authenticate_token(
    token: str, session: AsyncSession, credentials: Credentials
) -> Principal:
    """The principal of a bearer credential (also the dashboard's login); 401 otherwise."""
    if api_key_prefix(token) is not None:
        principal = await tenants_service.authenticate_api_key(
            session, token, cache=credentials.key_cache
        )
        if principal is None:
            raise Unauthorized("invalid or revoked API key", scheme=INVALID_TOKEN)
        return principal
    if api_key_prefix(token, OPERATOR_KEY_PREFIX) is not None:
        principal = await tenants_service.authenticate_operator_key(
            session, token, cache=credentials.key_cache
        )
        if principal is None:
            raise Unauthorized("invalid or revoked API key", scheme=INVALID_TOKEN)
        return principal
    admin_token = credentials.admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return OPERATOR
    verifier = credentials.jwt_verifier() if is_jwt_shaped(token) else None
    if verifier is None:
        raise Unauthorized("invalid bearer token", scheme=INVALID_TOKEN)
    try:
        principal = await verifier.verify(token)
    except InvalidToken:
        raise Unauthorized("invalid or expired access token", scheme=INVALID_TOKEN) from None
    except KeysUnavailable:
        raise ServiceUnavailable(
            "the token keys cannot be fetched", headers={"Retry-After": "5"}
        ) from None
    if await session.get(Tenant, principal.tenant_id) is None:
        raise Unauthorized("the token's tenant does not exist", scheme=INVALID_TOKEN)
    return principal


class RequireScope:
    """Authenticate the caller and require one scope of a tenant (`admin` implies the others)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, request: Request, credentials: CredentialsDep) -> Principal:
        principal = await authenticate(request, credentials)
        logs.bind(tenant_id=principal.tenant_id or None)
        if not principal.has(self.scope):
            raise Forbidden(f"this credential lacks the {self.scope.value!r} scope")
        if self.scope is not Scope.admin and principal.operator:
            raise Forbidden("operator credentials belong to no tenant: use a tenant's credential")
        return principal


JobsWriter = Annotated[Principal, Depends(RequireScope(Scope.jobs_write))]
JobsReader = Annotated[Principal, Depends(RequireScope(Scope.jobs_read))]
_AdminScope = Annotated[Principal, Depends(RequireScope(Scope.admin))]


async def require_operator(principal: _AdminScope) -> Principal:
    """The platform operator only (listing and creating tenants)."""
    if not principal.operator:
        raise Forbidden("only the operator may do this; a tenant's admin manages its own tenant")
    return principal


TenantId = Annotated[str, Path(max_length=64)]
# The id of an item under a tenant (an API key, a webhook secret, an R2 rule).
ItemId = Annotated[str, Path(max_length=64)]


async def require_tenant_admin(
    tenant_id: TenantId, principal: _AdminScope, session: SessionDep
) -> Principal:
    """The operator, or an `admin` of the `{tenant_id}` in the path; 404 for anyone else.

    Every route under `/v1/admin/tenants/{tenant_id}` depends on this, so the tenant is
    checked in one place: it exists (for the operator) and is the caller's own (for a
    tenant admin). Another tenant's id answers like an unknown one, so ids are not probed.
    """
    if not principal.manages(tenant_id):
        raise NotFound(f"tenant {tenant_id} does not exist")
    if principal.operator:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
    return principal


Operator = Annotated[Principal, Depends(require_operator)]
TenantAdmin = Annotated[Principal, Depends(require_tenant_admin)]
