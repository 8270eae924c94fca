"""PrestaShop events → jobs.

Orders: `order.created` / `order.status_changed` → one `sync-single-order` job.
Products: PrestaShop fires many hook calls for one product save (12 reported for one save
of the v2 product page), so every product event of a shop within one time bucket maps to the
same delayed `sync-products` job: the job body is identical and its idempotency key names
the (shop, bucket), so `submit_jobs` answers repeats with the first job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.handlers import service as handlers_service
from app.jobs.payloads import JobOptions, SyncProductsJob, SyncSingleOrderJob
from app.webhooks.schemas import PrestaShopEvent, PrestaShopEventType, UnsignedPrestaShopEvent

ORDER_EVENTS = frozenset({"order.created", "order.status_changed"})
PRODUCT_EVENTS = frozenset({"product.created", "product.updated", "product.deleted"})

JobPlan = list[tuple[JobOptions, str | None]]


class MalformedEvent(ValueError):
    """The event parses but lacks what its type needs (an order id for an order event)."""


@dataclass(frozen=True, slots=True)
class ShopEvent:
    """An event from either route, reduced to what the mapping needs."""

    type: PrestaShopEventType
    object_id: int
    shop_id: str | None
    shop_url: str | None


def from_signed(event: PrestaShopEvent) -> ShopEvent:
    object_id = event.data.id_order if event.type in ORDER_EVENTS else event.data.id_product
    if object_id is None:
        field = "id_order" if event.type in ORDER_EVENTS else "id_product"
        raise MalformedEvent(f"a {event.type} event needs data.{field}")
    return ShopEvent(event.type, object_id, event.shop.id, event.shop.url)


_UNSIGNED_TYPES: dict[tuple[str, str], tuple[PrestaShopEventType, str]] = {
    ("order", "add"): ("order.created", "id"),
    ("order", "update"): ("order.status_changed", "id"),
    ("orderhistory", "add"): ("order.status_changed", "id_order"),
    ("product", "add"): ("product.created", "id"),
    ("product", "update"): ("product.updated", "id"),
    ("product", "delete"): ("product.deleted", "id"),
}


def from_unsigned(event: UnsignedPrestaShopEvent) -> ShopEvent | None:
    """The event a `ps_webhooks` payload stands for; None for entities we do not sync."""
    entity = event.entity.rsplit("\\", 1)[-1].lower()
    mapped = _UNSIGNED_TYPES.get((entity, event.action))
    if mapped is None:
        return None
    event_type, id_field = mapped
    raw: Any = event.data.get(id_field)
    try:
        object_id = int(raw)
    except (TypeError, ValueError):
        raise MalformedEvent(f"a {event.entity} {event.action} needs data.{id_field}") from None
    if object_id < 1:
        raise MalformedEvent(f"data.{id_field} must be a positive id")
    shop = event.data.get("id_shop")
    return ShopEvent(event_type, object_id, str(shop) if shop is not None else None, None)


async def resolve_site_id(
    session: AsyncSession, *, tenant_id: str, shop_id: str | None, shop_url: str | None
) -> str | None:
    """The tenant's shop connection the event came from: by site id, then URL, then default."""
    shops = await handlers_service.list_shop_connections(session, tenant_id=tenant_id)
    for shop in shops:
        if shop_id is not None and shop.site_id == shop_id:
            return shop.site_id
    if shop_url:
        for shop in shops:
            if shop.base_url == shop_url.rstrip("/"):
                return shop.site_id
    default = next((s for s in shops if s.is_default), None)
    if default is None and len(shops) == 1:
        default = shops[0]
    return default.site_id if default is not None else None


def plan_jobs(
    event: ShopEvent,
    *,
    site_id: str | None,
    now_s: int,
    debounce_seconds: int,
    breaker_delay: int = 0,
) -> JobPlan:
    """The job requests (with idempotency keys) one event makes.

    `breaker_delay`: while the consumer's circuit breaker for the job type is open, the
    jobs are stored anyway and delivered once it half-opens (webhooks are not refused).
    """
    if event.type in ORDER_EVENTS:
        order = SyncSingleOrderJob(
            type="sync-single-order",
            orderId=event.object_id,
            siteId=site_id,
            delay_seconds=breaker_delay or None,
        )
        return [(order, None)]
    site = site_id or event.shop_id or "default"
    bucket = now_s // debounce_seconds
    delay = max(debounce_seconds, breaker_delay)
    products = SyncProductsJob(
        type="sync-products", siteId=site, incremental=True, delay_seconds=delay
    )
    # The delay is part of the key: deliveries of one bucket before and after a breaker
    # opened make two jobs rather than a conflict.
    key = f"ps-products:{site}:{bucket}" + (f":{delay}" if delay != debounce_seconds else "")
    return [(products, key)]


def planned_types(event: ShopEvent) -> list[str]:
    return ["sync-single-order"] if event.type in ORDER_EVENTS else ["sync-products"]
