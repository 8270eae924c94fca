"""Admin API: tenants, API keys, webhook secrets.

The admin routes of other domains live beside them (`app/handlers/admin.py`: shop
connections; `app/webhooks/admin.py`: R2 rules, the unsigned route; `app/admission/admin.py`:
the email policy) and follow the same rules.

Listing and creating tenants is the operator's (ADMIN_TOKEN or an operator key); every
route under `/tenants/{tenant_id}` takes `TenantAdmin`: the operator, or an `admin` of that
tenant (another tenant's id answers 404). New routes here must use one of the two.
Secrets are returned once, when created; lists never carry them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from app.core.deps import BoxDep, SessionDep
from app.core.errors import problem_responses
from app.core.openapi import Tag
from app.tenants import service as tenants_service
from app.tenants.deps import CredentialsDep, ItemId, Operator, TenantAdmin, TenantId
from app.tenants.models import ApiKey
from app.tenants.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyPublic,
    TenantCreate,
    TenantCreated,
    TenantList,
    TenantPublic,
    WebhookSecretCreated,
    WebhookSecretList,
    WebhookSecretPublic,
)

router = APIRouter(prefix="/v1/admin", tags=[Tag.admin])


def _key_public(row: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=row.id,
        tenant_id=row.tenant_id,
        prefix=row.prefix,
        scopes=row.scopes.split(),
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantCreated,
    responses=problem_responses(401, 403, 409, 422),
)
async def create_tenant(
    body: TenantCreate, _operator: Operator, session: SessionDep, box: BoxDep
) -> TenantCreated:
    """Create a tenant with one API key and one webhook secret (shown only now)."""
    created = await tenants_service.create_tenant(
        session, name=body.name, box=box, scopes=body.scopes
    )
    await session.commit()
    return created


@router.get("/tenants", response_model=TenantList, responses=problem_responses(401, 403))
async def list_tenants(_operator: Operator, session: SessionDep) -> TenantList:
    """Every tenant, oldest first."""
    rows = await tenants_service.list_tenants(session)
    return TenantList(data=[TenantPublic.model_validate(r) for r in rows])


@router.get(
    "/tenants/{tenant_id}", response_model=TenantPublic, responses=problem_responses(401, 403, 404)
)
async def get_tenant(tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep) -> TenantPublic:
    """One tenant."""
    return TenantPublic.model_validate(
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
    )


@router.post(
    "/tenants/{tenant_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=problem_responses(401, 403, 404, 422),
)
async def create_api_key(
    tenant_id: TenantId, body: ApiKeyCreate, _admin: TenantAdmin, session: SessionDep
) -> ApiKeyCreated:
    """A new API key for the tenant (the key is shown only now)."""
    key, row = await tenants_service.create_api_key(
        session, tenant_id=tenant_id, scopes=body.scopes, name=body.name
    )
    await session.commit()
    return ApiKeyCreated(**_key_public(row).model_dump(), api_key=key)


@router.get(
    "/tenants/{tenant_id}/api-keys",
    response_model=ApiKeyList,
    responses=problem_responses(401, 403, 404, 422),
)
async def list_api_keys(
    tenant_id: TenantId,
    _admin: TenantAdmin,
    session: SessionDep,
    prefix: Annotated[str | None, Query(max_length=32, description="e.g. jg_ab12")] = None,
) -> ApiKeyList:
    """The tenant's keys (revoked ones too), optionally by the start of their prefix."""
    rows = await tenants_service.list_api_keys(session, tenant_id=tenant_id, prefix=prefix)
    return ApiKeyList(data=[_key_public(r) for r in rows])


@router.delete(
    "/tenants/{tenant_id}/api-keys/{key_id}",
    response_model=ApiKeyPublic,
    responses=problem_responses(401, 403, 404),
)
async def revoke_api_key(
    tenant_id: TenantId,
    key_id: ItemId,
    _admin: TenantAdmin,
    session: SessionDep,
    credentials: CredentialsDep,
) -> ApiKeyPublic:
    """Revoke a key; it stops working at once here, within seconds on other gateways."""
    row = await tenants_service.revoke_api_key(
        session, tenant_id=tenant_id, key_id=key_id, cache=credentials.key_cache
    )
    await session.commit()
    return _key_public(row)


@router.post(
    "/tenants/{tenant_id}/webhook-secrets",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookSecretCreated,
    responses=problem_responses(401, 403, 404),
)
async def rotate_webhook_secret(
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep, box: BoxDep
) -> WebhookSecretCreated:
    """Start a rotation: a new secret; old and new both verify until the old is revoked."""
    secret, row = await tenants_service.add_webhook_secret(session, tenant_id=tenant_id, box=box)
    await session.commit()
    return WebhookSecretCreated(
        **WebhookSecretPublic.model_validate(row).model_dump(), secret=secret
    )


@router.get(
    "/tenants/{tenant_id}/webhook-secrets",
    response_model=WebhookSecretList,
    responses=problem_responses(401, 403, 404),
)
async def list_webhook_secrets(
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep
) -> WebhookSecretList:
    """The tenant's webhook secrets (without their values), oldest first."""
    rows = await tenants_service.list_webhook_secrets(session, tenant_id=tenant_id)
    return WebhookSecretList(data=[WebhookSecretPublic.model_validate(r) for r in rows])


@router.delete(
    "/tenants/{tenant_id}/webhook-secrets/{secret_id}",
    response_model=WebhookSecretPublic,
    responses=problem_responses(401, 403, 404, 409),
)
async def revoke_webhook_secret(
    tenant_id: TenantId, secret_id: ItemId, _admin: TenantAdmin, session: SessionDep
) -> WebhookSecretPublic:
    """Finish a rotation: revoke an old secret (the last active one cannot be revoked)."""
    row = await tenants_service.revoke_webhook_secret(
        session, tenant_id=tenant_id, secret_id=secret_id
    )
    await session.commit()
    return WebhookSecretPublic.model_validate(row)
