"""Authentication dependencies: `Authorization: Bearer <api key | JWT | admin token>`.

API keys (`jg_...`) are looked up by prefix and hash; JWTs are verified by `JwtVerifier`
(JWKS or HS256, see tokens.py); the `ADMIN_TOKEN` setting grants the `admin` scope and
nothing else (it belongs to no tenant, so it cannot submit or read jobs).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import Forbidden, ServiceUnavailable, Unauthorized
from app.core.runtime import Runtime
from app.core.security import api_key_prefix
from app.tenants import service as tenants_service
from app.tenants.models import Tenant
from app.tenants.schemas import Principal, Scope
from app.tenants.tokens import InvalidToken, JwtVerifier, KeysUnavailable, is_jwt_shaped

INVALID_TOKEN = 'Bearer error="invalid_token"'
ADMIN_PRINCIPAL = Principal(tenant_id="", scopes=frozenset({Scope.admin.value}))


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("send Authorization: Bearer <api key>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <api key>'")
    return token.strip()


def jwt_verifier(request: Request, runtime: Runtime) -> JwtVerifier | None:
    """The app's verifier, built on first use (it holds the JWKS cache)."""
    state = request.app.state
    if not hasattr(state, "jwt_verifier"):
        state.jwt_verifier = JwtVerifier.from_settings(runtime.settings, runtime.clock)
    verifier: JwtVerifier | None = state.jwt_verifier
    return verifier


async def authenticate(request: Request, session: SessionDep, runtime: RuntimeDep) -> Principal:
    """Who is calling, from any accepted bearer credential; 401 otherwise."""
    token = bearer_token(request)
    if api_key_prefix(token) is not None:
        principal = await tenants_service.authenticate_api_key(
            session, token, cache=runtime.key_cache
        )
        if principal is None:
            raise Unauthorized("invalid or revoked API key", scheme=INVALID_TOKEN)
        return principal
    admin_token = runtime.settings.admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return ADMIN_PRINCIPAL
    verifier = jwt_verifier(request, runtime) if is_jwt_shaped(token) else None
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
    """Authenticate the caller and require one scope (`admin` implies every scope)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self, request: Request, session: SessionDep, runtime: RuntimeDep
    ) -> Principal:
        principal = await authenticate(request, session, runtime)
        if not principal.has(self.scope):
            raise Forbidden(f"this credential lacks the {self.scope.value!r} scope")
        if self.scope is not Scope.admin and not principal.tenant_id:
            raise Forbidden("the admin token belongs to no tenant: use a tenant's credential")
        return principal


JobsWriter = Annotated[Principal, Depends(RequireScope(Scope.jobs_write))]
JobsReader = Annotated[Principal, Depends(RequireScope(Scope.jobs_read))]
Admin = Annotated[Principal, Depends(RequireScope(Scope.admin))]
