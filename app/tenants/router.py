"""Admin API: tenants, API keys, webhook secrets, shop connections, ingress settings.

Listing and creating tenants is the operator's (ADMIN_TOKEN or an operator key); every
route under `/tenants/{tenant_id}` takes `TenantAdmin`: the operator, or an `admin` of that
tenant (another tenant's id answers 404). New routes here must use one of the two.
Secrets are returned once, when created; lists never carry them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.admission import email_policy
from app.admission.email_policy import EmailPolicyPublic, EmailPolicySet
from app.core.clock import to_datetime
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import NotFound, problem_responses
from app.core.openapi import Tag
from app.handlers import service as handlers_service
from app.handlers.models import ShopConnection
from app.handlers.shop_url import ShopUrlGuard
from app.tenants import service as tenants_service
from app.tenants.deps import Operator, TenantAdmin
from app.tenants.models import ApiKey
from app.tenants.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyPublic,
    ShopConnectionList,
    ShopConnectionPublic,
    ShopConnectionSet,
    TenantCreate,
    TenantCreated,
    TenantList,
    TenantPublic,
    WebhookSecretCreated,
    WebhookSecretList,
    WebhookSecretPublic,
)
from app.webhooks import r2
from app.webhooks import service as webhooks_service
from app.webhooks.schemas import R2RuleCreate, R2RulePublic, UnsignedTokenCreated

router = APIRouter(prefix="/v1/admin", tags=[Tag.admin])

TenantId = Annotated[str, Path(max_length=64)]
ItemId = Annotated[str, Path(max_length=64)]
SiteId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


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


def _shop_public(row: ShopConnection) -> ShopConnectionPublic:
    return ShopConnectionPublic.model_validate(row)


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantCreated,
    responses=problem_responses(401, 403, 409, 422),
)
async def create_tenant(
    body: TenantCreate, _operator: Operator, session: SessionDep, runtime: RuntimeDep
) -> TenantCreated:
    """Create a tenant with one API key and one webhook secret (shown only now)."""
    created = await tenants_service.create_tenant(
        session, name=body.name, box=runtime.box, scopes=body.scopes
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
    runtime: RuntimeDep,
) -> ApiKeyPublic:
    """Revoke a key; it stops working at once here, within seconds on other gateways."""
    row = await tenants_service.revoke_api_key(
        session, tenant_id=tenant_id, key_id=key_id, cache=runtime.key_cache
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
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep, runtime: RuntimeDep
) -> WebhookSecretCreated:
    """Start a rotation: a new secret; old and new both verify until the old is revoked."""
    secret, row = await tenants_service.add_webhook_secret(
        session, tenant_id=tenant_id, box=runtime.box
    )
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


@router.put(
    "/tenants/{tenant_id}/shops/{site_id}",
    response_model=ShopConnectionPublic,
    responses=problem_responses(401, 403, 404, 422),
)
async def set_shop_connection(
    tenant_id: TenantId,
    site_id: SiteId,
    body: ShopConnectionSet,
    _admin: TenantAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> ShopConnectionPublic:
    """Create or replace a PrestaShop connection (URL + Webservice key, stored encrypted)."""
    row = await handlers_service.set_shop_connection(
        session,
        tenant_id=tenant_id,
        site_id=site_id,
        base_url=body.base_url,
        key=body.webservice_key,
        box=runtime.box,
        guard=ShopUrlGuard.from_settings(runtime.settings),
        timezone=body.timezone,
        make_default=body.make_default,
    )
    await session.commit()
    return _shop_public(row)


@router.get(
    "/tenants/{tenant_id}/shops",
    response_model=ShopConnectionList,
    responses=problem_responses(401, 403, 404),
)
async def list_shop_connections(
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep
) -> ShopConnectionList:
    """The tenant's PrestaShop connections (without their keys)."""
    rows = await handlers_service.list_shop_connections(session, tenant_id=tenant_id)
    return ShopConnectionList(data=[_shop_public(r) for r in rows])


@router.post(
    "/tenants/{tenant_id}/r2-rules",
    status_code=status.HTTP_201_CREATED,
    response_model=R2RulePublic,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_r2_rule(
    tenant_id: TenantId, body: R2RuleCreate, _admin: TenantAdmin, session: SessionDep
) -> R2RulePublic:
    """Objects created in this bucket under this prefix become process-image jobs."""
    row = await r2.add_rule(session, tenant_id=tenant_id, rule=body)
    await session.commit()
    return R2RulePublic.model_validate(row)


@router.get(
    "/tenants/{tenant_id}/r2-rules",
    response_model=list[R2RulePublic],
    responses=problem_responses(401, 403, 404),
)
async def list_r2_rules(
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep
) -> list[R2RulePublic]:
    """The tenant's R2 rules."""
    rows = await r2.list_rules(session, tenant_id=tenant_id)
    return [R2RulePublic.model_validate(r) for r in rows]


@router.delete(
    "/tenants/{tenant_id}/r2-rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 403, 404),
)
async def delete_r2_rule(
    tenant_id: TenantId, rule_id: ItemId, _admin: TenantAdmin, session: SessionDep
) -> None:
    """Stop making jobs for a rule's objects."""
    await r2.delete_rule(session, tenant_id=tenant_id, rule_id=rule_id)
    await session.commit()


@router.post(
    "/tenants/{tenant_id}/unsigned-webhook",
    status_code=status.HTTP_201_CREATED,
    response_model=UnsignedTokenCreated,
    responses=problem_responses(401, 403, 404),
)
async def enable_unsigned_webhook(
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep
) -> UnsignedTokenCreated:
    """Opt in to the WEAKER unsigned PrestaShop route (new token; an old one stops working)."""
    token = await webhooks_service.enable_unsigned_route(session, tenant_id=tenant_id)
    await session.commit()
    return UnsignedTokenCreated(
        token=token, path=f"/v1/webhooks/prestashop/{tenant_id}/unsigned/{token}"
    )


@router.delete(
    "/tenants/{tenant_id}/unsigned-webhook",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 403, 404),
)
async def disable_unsigned_webhook(
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep
) -> None:
    """Turn the unsigned route off for the tenant."""
    if not await webhooks_service.disable_unsigned_route(session, tenant_id=tenant_id):
        raise NotFound("the unsigned webhook route is not enabled for this tenant")
    await session.commit()


@router.put(
    "/tenants/{tenant_id}/email-policy",
    response_model=EmailPolicyPublic,
    responses=problem_responses(401, 403, 404, 422),
)
async def set_email_policy(
    tenant_id: TenantId,
    body: EmailPolicySet,
    _operator: Operator,
    session: SessionDep,
    runtime: RuntimeDep,
) -> EmailPolicyPublic:
    """Where the tenant's `send-email` jobs may go (domains or any) and how many per period.

    Operator only: the policy protects the platform's shared sender from its tenants.
    """
    row = await email_policy.set_policy(
        session,
        tenant_id=tenant_id,
        allow_any=body.allow_any,
        domains=body.domains,
        rate=body.rate,
        now=to_datetime(runtime.clock.now_ms()),
    )
    await session.commit()
    return email_policy.public(tenant_id, row)


@router.get(
    "/tenants/{tenant_id}/email-policy",
    response_model=EmailPolicyPublic,
    responses=problem_responses(401, 403, 404),
)
async def get_email_policy(
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep
) -> EmailPolicyPublic:
    """The tenant's email policy (`configured: false`: none set, so no email is accepted)."""
    return email_policy.public(tenant_id, await email_policy.get_policy(session, tenant_id))
