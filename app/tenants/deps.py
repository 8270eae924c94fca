"""Authentication dependencies: `Authorization: Bearer <api key>` with scope checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import Forbidden, Unauthorized
from app.tenants import service as tenants_service
from app.tenants.schemas import Principal, Scope


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("send Authorization: Bearer <api key>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <api key>'")
    return token.strip()


class RequireScope:
    """Authenticate the caller and require one scope (`admin` implies every scope)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self, request: Request, session: SessionDep, runtime: RuntimeDep
    ) -> Principal:
        token = bearer_token(request)
        principal = await tenants_service.authenticate_api_key(
            session, token, cache=runtime.key_cache
        )
        if principal is None:
            raise Unauthorized("invalid or revoked API key", scheme='Bearer error="invalid_token"')
        if not principal.has(self.scope):
            raise Forbidden(f"this key lacks the {self.scope.value!r} scope")
        return principal


JobsWriter = Annotated[Principal, Depends(RequireScope(Scope.jobs_write))]
JobsReader = Annotated[Principal, Depends(RequireScope(Scope.jobs_read))]
