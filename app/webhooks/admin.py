"""Admin API of the webhooks domain: R2 rules and the unsigned PrestaShop route (`TenantAdmin`)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.core.deps import SessionDep
from app.core.errors import NotFound, problem_responses
from app.core.openapi import Tag
from app.tenants.deps import ItemId, TenantAdmin, TenantId
from app.webhooks import r2
from app.webhooks import service as webhooks_service
from app.webhooks.schemas import R2RuleCreate, R2RulePublic, UnsignedTokenCreated

router = APIRouter(prefix="/v1/admin", tags=[Tag.admin])


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
