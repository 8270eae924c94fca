"""Admin API of the handlers domain: a tenant's PrestaShop connections (`TenantAdmin`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from app.core.deps import BoxDep, SessionDep, component
from app.core.errors import problem_responses
from app.core.openapi import Tag
from app.handlers import service as handlers_service
from app.handlers.models import ShopConnection
from app.handlers.schemas import ShopConnectionList, ShopConnectionPublic, ShopConnectionSet
from app.handlers.shop_url import ShopUrlGuard
from app.tenants.deps import TenantAdmin, TenantId

# Built once by the composition root from JOBGATE_PRESTASHOP_* and the environment.
ShopUrlGuardDep = Annotated[ShopUrlGuard, Depends(component("shop_url_guard"))]

router = APIRouter(prefix="/v1/admin", tags=[Tag.admin])

SiteId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _shop_public(row: ShopConnection) -> ShopConnectionPublic:
    return ShopConnectionPublic.model_validate(row)


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
    box: BoxDep,
    guard: ShopUrlGuardDep,
) -> ShopConnectionPublic:
    """Create or replace a PrestaShop connection (URL + Webservice key, stored encrypted)."""
    row = await handlers_service.set_shop_connection(
        session,
        tenant_id=tenant_id,
        site_id=site_id,
        base_url=body.base_url,
        key=body.webservice_key,
        box=box,
        guard=guard,
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
