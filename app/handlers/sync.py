"""`sync-orders`, `sync-products`, `sync-single-order`: PrestaShop into tenant tables.

Idempotent by construction: rows are upserted by (tenant, site, PrestaShop id), never
overwritten by an older `date_upd`, and every page commits on its own, so a retry after a
crash simply re-reads (orders: the same `lastDays` window; products: from the watermark).

Paging is keyset over `(date_upd, id)`, always at offset 0 (`limit=0,count`): after a
full page whose last row is in second d, the next page is `filter[date_upd]=[d,end]`
(re-reading the few rows of second d, which the upsert absorbs). When a whole page sits in
one second, the rest of that second is read by id (`filter[date_upd]=[d,d]&filter[id]=>[n]`)
before moving on to d + 1 s. No offset is ever reused, so a row updated during the sync
(it moves to "now") is read again later instead of shifting the pages under us and making
another row be skipped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.consumer.registry import JobContext, PermanentFailure, RetryLater, handler
from app.core.clock import to_datetime
from app.core.db import table_of
from app.handlers import service
from app.handlers.models import PsOrder, PsProduct, ShopConnection
from app.handlers.prestashop import (
    PrestaShopAuthError,
    PrestaShopClient,
    PrestaShopNotFound,
    PrestaShopRateLimited,
    PrestaShopRequestError,
    PrestaShopUnavailable,
    as_bool,
    as_datetime,
    as_decimal,
    as_int,
    format_date,
    ml_value,
)
from app.handlers.shop_url import ShopUrlGuard, UnsafeShopUrl
from app.jobs.payloads import (
    JobPayload,
    SyncOrdersPayload,
    SyncProductsPayload,
    SyncSingleOrderPayload,
)

logger = logging.getLogger(__name__)

# Re-read this much before the watermark: `date_upd` has second granularity and a row
# written in the watermark's second may have committed after we read it.
WATERMARK_OVERLAP = timedelta(seconds=60)
# Upper bound of date windows, ahead of "now" to absorb clock skew with the shop.
CLOCK_SKEW = timedelta(hours=1)
GUARD_STATE = f"{__name__}.guard"
PRODUCT_KEYS = ("tenant_id", "site_id", "product_id")
ORDER_KEYS = ("tenant_id", "site_id", "order_id")


@dataclass(slots=True)
class Shop:
    connection: ShopConnection
    client: PrestaShopClient
    page_size: int

    @property
    def site_id(self) -> str:
        return self.connection.site_id

    def local_now(self, now_ms: int) -> datetime:
        """Now in the shop's wall time, naive (how PrestaShop stores and filters dates)."""
        zone = ZoneInfo(self.connection.timezone)
        return to_datetime(now_ms).astimezone(zone).replace(tzinfo=None)


@contextmanager
def shop_errors() -> Iterator[None]:
    """Map shop answers onto the consumer: permanent, retry-later, or transient (re-raised)."""
    try:
        yield
    except (PrestaShopAuthError, PrestaShopRequestError, PrestaShopNotFound) as exc:
        raise PermanentFailure(str(exc)) from exc
    except PrestaShopRateLimited as exc:
        raise RetryLater(exc.retry_after, str(exc)) from exc


@asynccontextmanager
async def open_shop(ctx: JobContext[JobPayload], site_id: str | None) -> AsyncIterator[Shop]:
    """The shop and a client for this run; its connections go only to the address the
    shop's host resolved to and passed the guard (see `shop_url`), closed after the run."""
    resources = ctx.resources
    async with resources.sessionmaker() as session:
        connection = await service.get_shop_connection(
            session, tenant_id=ctx.tenant_id, site_id=site_id
        )
    if connection is None:
        which = f"shop {site_id!r}" if site_id else "default shop"
        raise PermanentFailure(f"the tenant has no {which}; set one with `jobgate shops set`")
    try:
        key = resources.box.decrypt(connection.key_encrypted)
    except ValueError as exc:
        raise PermanentFailure("the shop key cannot be decrypted with JOBGATE_SECRET_KEY") from exc
    guard = resources.state.get(GUARD_STATE)
    if not isinstance(guard, ShopUrlGuard):
        guard = resources.state[GUARD_STATE] = ShopUrlGuard.from_settings(
            resources.settings.prestashop, resources.settings.environment
        )
    timeout = resources.settings.prestashop.timeout_seconds
    async with guard.client(timeout=timeout) as http:
        client = PrestaShopClient(
            http, base_url=connection.base_url, key=key, timeout=timeout, clock=resources.clock
        )
        try:
            yield Shop(connection, client, resources.settings.prestashop.page_size)
        except UnsafeShopUrl as exc:
            # The shop's host now resolves somewhere refused (changed DNS): not retried.
            raise PermanentFailure(str(exc)) from exc


def order_row(
    ctx: JobContext[JobPayload], site_id: str, raw: dict[str, Any]
) -> dict[str, Any] | None:
    order_id = as_int(raw.get("id"))
    if order_id is None:
        return None
    # The secure key lets anyone view the order on the front office: do not keep it.
    data = {k: v for k, v in raw.items() if k != "secure_key"}
    reference = raw.get("reference")
    payment = raw.get("payment")
    return {
        "tenant_id": ctx.tenant_id,
        "site_id": site_id,
        "order_id": order_id,
        "reference": str(reference)[:32] if reference else None,
        "current_state": as_int(raw.get("current_state")),
        "id_customer": as_int(raw.get("id_customer")),
        "id_currency": as_int(raw.get("id_currency")),
        "payment": str(payment)[:255] if payment else None,
        "total_paid": as_decimal(raw.get("total_paid")),
        "date_add": as_datetime(raw.get("date_add")),
        "date_upd": as_datetime(raw.get("date_upd")),
        "data": data,
        "synced_at": to_datetime(ctx.resources.clock.now_ms()),
    }


def product_row(
    ctx: JobContext[SyncProductsPayload],
    site_id: str,
    raw: dict[str, Any],
    suppliers: list[dict[str, Any]] | None,
) -> dict[str, Any] | None:
    product_id = as_int(raw.get("id"))
    if product_id is None:
        return None
    reference = raw.get("reference")
    return {
        "tenant_id": ctx.tenant_id,
        "site_id": site_id,
        "product_id": product_id,
        "reference": str(reference)[:64] if reference else None,
        "name": ml_value(raw.get("name")),
        "price": as_decimal(raw.get("price")),
        "active": as_bool(raw.get("active")),
        "id_supplier": as_int(raw.get("id_supplier")),
        "id_manufacturer": as_int(raw.get("id_manufacturer")),
        "date_upd": as_datetime(raw.get("date_upd")),
        "suppliers": suppliers,
        "data": raw,
        "synced_at": to_datetime(ctx.resources.clock.now_ms()),
    }


def _dedupe(rows: Sequence[dict[str, Any] | None], key: str) -> list[dict[str, Any]]:
    # One statement cannot update the same row twice (PostgreSQL refuses): last one wins.
    by_id = {row[key]: row for row in rows if row is not None}
    return list(by_id.values())


async def _record_version(session: AsyncSession, shop: Shop) -> None:
    version = shop.client.ps_version
    if version and version != shop.connection.ps_version:
        table = table_of(ShopConnection)
        await session.execute(
            update(table).where(table.c.id == shop.connection.id).values(ps_version=version)
        )
        shop.connection.ps_version = version


def _window_percent(start: datetime, end: datetime, reached: datetime | None) -> int:
    if reached is None or end <= start:
        return 0
    done = (reached - start) / (end - start)
    return max(1, min(99, int(done * 100)))


class DateKeyset:
    """Keyset paging over (date_upd, id) within [start, end] (see the module docstring)."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.end = end
        self.date: datetime | None = None
        self.last_id = 0
        self.in_second = False
        self._after_second = False
        self.seen: set[int] = set()

    def query(self) -> tuple[dict[str, str], str]:
        """(filters, sort) of the next page."""
        if self.in_second and self.date is not None:
            day = format_date(self.date)
            return {"date_upd": f"[{day},{day}]", "id": f">[{self.last_id}]"}, "[id_ASC]"
        lower = self.start if self.date is None else self.date
        if self._after_second:
            lower += timedelta(seconds=1)
        window = f"[{format_date(lower)},{format_date(self.end)}]"
        return {"date_upd": window}, "[date_upd_ASC,id_ASC]"

    def advance(self, items: Sequence[dict[str, Any]], page_size: int) -> bool:
        """Take in a page; False once the window is exhausted."""
        keys = [(as_datetime(i.get("date_upd")), as_int(i.get("id"))) for i in items]
        if any(d is None or n is None for d, n in keys):
            raise PrestaShopUnavailable("a listed row has no id or date_upd: cannot page")
        self.seen.update(n for _, n in keys if n is not None)
        full = len(items) >= page_size
        if self.in_second:
            if keys:
                self.last_id = keys[-1][1] or self.last_id
            if not full:  # this second is done: on to the next one
                self.in_second = False
                self._after_second = True
                assert self.date is not None
                return self.date + timedelta(seconds=1) <= self.end
            return True
        if not full:
            if keys:
                self.date = keys[-1][0]
            return False
        first, last = keys[0][0], keys[-1][0]
        self.date = last
        self._after_second = False
        if first == last:
            # A whole page in one second: continue inside it by id.
            self.in_second = True
            self.last_id = keys[-1][1] or 0
        return True


async def _fetch_orders(
    shop: Shop, filters: dict[str, str], sort: str, *, bulk: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the listed page, the full orders of that page)."""
    common: dict[str, Any] = {
        "filters": filters,
        "sort": sort,
        "date": True,
        "offset": 0,
        "limit": shop.page_size,
    }
    if bulk:
        page = await shop.client.list("orders", display="full", **common)
        return page, page
    # Gentle mode for shops where `display=full` pages time out (N+1 inside PrestaShop):
    # list ids, then fetch each order on its own.
    listed = await shop.client.list("orders", display="[id,date_upd]", **common)
    full = []
    for item in listed:
        order_id = as_int(item.get("id"))
        if order_id is None:
            continue
        try:
            full.append(await shop.client.get("orders", order_id))
        except PrestaShopNotFound:
            continue
    return listed, full


@handler("sync-orders", SyncOrdersPayload, timeout_seconds=3600)
async def sync_orders(ctx: JobContext[SyncOrdersPayload]) -> None:
    """Upsert the orders updated in the last `lastDays` days, one committed page at a time."""
    last_days = ctx.payload.lastDays
    bulk = ctx.payload.bulkMode
    async with open_shop(ctx, ctx.payload.siteId) as shop:
        now = shop.local_now(ctx.resources.clock.now_ms())
        keyset = DateKeyset(now - timedelta(days=last_days), now + CLOCK_SKEW)
        pages = total = 0
        with shop_errors():
            more = True
            while more:
                filters, sort = keyset.query()
                listed, items = await _fetch_orders(shop, filters, sort, bulk=bulk)
                more = keyset.advance(listed, shop.page_size)
                if not listed:
                    continue
                pages += 1
                rows = _dedupe([order_row(ctx, shop.site_id, item) for item in items], "order_id")
                async with ctx.resources.sessionmaker() as session:
                    await service.upsert(
                        session, PsOrder, rows, keys=ORDER_KEYS, newer_by="date_upd"
                    )
                    if keyset.date is not None:
                        await service.advance_watermark(
                            session,
                            tenant_id=ctx.tenant_id,
                            site_id=shop.site_id,
                            resource="orders",
                            watermark=keyset.date,
                            job_id=ctx.job_id,
                        )
                    await _record_version(session, shop)
                    await session.commit()
                total = len(keyset.seen)
                percent = _window_percent(keyset.start, keyset.end, keyset.date)
                await ctx.progress(percent, f"page {pages}: {total} orders")
        logger.info("synced %d orders for site %s in %d pages", total, shop.site_id, pages)
        await ctx.progress(100, f"{total} orders synced ({pages} pages)")


@handler("sync-single-order", SyncSingleOrderPayload, timeout_seconds=300)
async def sync_single_order(ctx: JobContext[SyncSingleOrderPayload]) -> None:
    """Upsert one order (after an order webhook); an order the shop does not have fails."""
    order_id = ctx.payload.orderId
    async with open_shop(ctx, ctx.payload.siteId) as shop:
        with shop_errors():
            raw = await shop.client.get("orders", order_id)
        row = order_row(ctx, shop.site_id, raw)
        if row is None:
            raise PermanentFailure(f"order {order_id} came back without an id")
        async with ctx.resources.sessionmaker() as session:
            await service.upsert(session, PsOrder, [row], keys=ORDER_KEYS, newer_by="date_upd")
            await _record_version(session, shop)
            await session.commit()
        await ctx.progress(100, f"order {order_id} synced")


async def _supplier_links(shop: Shop, product_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """`product_suppliers` of these products, grouped by product (paged)."""
    links: dict[int, list[dict[str, Any]]] = {pid: [] for pid in product_ids}
    if not product_ids:
        return links
    wanted = "[" + "|".join(str(pid) for pid in product_ids) + "]"
    offset = 0
    while True:
        items = await shop.client.list(
            "product_suppliers",
            display="full",
            filters={"id_product": wanted},
            sort="[id_ASC]",
            offset=offset,
            limit=shop.page_size,
        )
        for item in items:
            pid = as_int(item.get("id_product"))
            if pid in links:
                links[pid].append(
                    {
                        "id": as_int(item.get("id")),
                        "id_supplier": as_int(item.get("id_supplier")),
                        "id_product_attribute": as_int(item.get("id_product_attribute")),
                        "reference": item.get("product_supplier_reference") or None,
                        "price_te": item.get("product_supplier_price_te"),
                        "id_currency": as_int(item.get("id_currency")),
                    }
                )
        if len(items) < shop.page_size:
            return links
        offset += len(items)


async def _store_products(
    ctx: JobContext[SyncProductsPayload],
    shop: Shop,
    items: list[dict[str, Any]],
    *,
    link_vendors: bool,
    watermark: datetime | None,
) -> int:
    ids = [pid for pid in (as_int(item.get("id")) for item in items) if pid is not None]
    links = await _supplier_links(shop, ids) if link_vendors else {}
    rows = _dedupe(
        [
            product_row(ctx, shop.site_id, item, links.get(as_int(item.get("id")) or 0))
            for item in items
        ],
        "product_id",
    )
    update_columns = None
    if not link_vendors:
        # Links were not fetched this time: keep the stored ones.
        kept = (*PRODUCT_KEYS, "suppliers")
        update_columns = [c for c in (rows[0] if rows else {}) if c not in kept]
    async with ctx.resources.sessionmaker() as session:
        await service.upsert(
            session,
            PsProduct,
            rows,
            keys=PRODUCT_KEYS,
            update_columns=update_columns,
            newer_by="date_upd",
        )
        if watermark is not None:
            await service.advance_watermark(
                session,
                tenant_id=ctx.tenant_id,
                site_id=shop.site_id,
                resource="products",
                watermark=watermark,
                job_id=ctx.job_id,
            )
        await _record_version(session, shop)
        await session.commit()
    return len(rows)


@handler("sync-products", SyncProductsPayload, timeout_seconds=3600)
async def sync_products(ctx: JobContext[SyncProductsPayload]) -> None:
    """Upsert products: since the watermark when `incremental`, else the whole catalog."""
    incremental = ctx.payload.incremental
    link_vendors = ctx.payload.linkVendors
    async with open_shop(ctx, ctx.payload.siteId) as shop:
        async with ctx.resources.sessionmaker() as session:
            watermark = await service.get_watermark(
                session, tenant_id=ctx.tenant_id, site_id=shop.site_id, resource="products"
            )
        with shop_errors():
            if incremental and watermark is not None:
                total, pages = await _products_since(
                    ctx, shop, watermark, link_vendors=link_vendors
                )
            else:
                total, pages = await _products_full(ctx, shop, link_vendors=link_vendors)
        logger.info("synced %d products for site %s in %d pages", total, shop.site_id, pages)
        await ctx.progress(100, f"{total} products synced ({pages} pages)")


async def _products_since(
    ctx: JobContext[SyncProductsPayload], shop: Shop, watermark: datetime, *, link_vendors: bool
) -> tuple[int, int]:
    now = shop.local_now(ctx.resources.clock.now_ms())
    keyset = DateKeyset(watermark - WATERMARK_OVERLAP, max(now, watermark) + CLOCK_SKEW)
    pages = total = 0
    more = True
    while more:
        filters, sort = keyset.query()
        items = await shop.client.list(
            "products",
            display="full",
            filters=filters,
            sort=sort,
            date=True,
            limit=shop.page_size,
        )
        more = keyset.advance(items, shop.page_size)
        if not items:
            continue
        pages += 1
        # Ordered by (date_upd, id): once a page is stored, everything up to it is.
        await _store_products(ctx, shop, items, link_vendors=link_vendors, watermark=keyset.date)
        total = len(keyset.seen)
        percent = _window_percent(keyset.start, keyset.end, keyset.date)
        await ctx.progress(percent, f"page {pages}: {total} products")
    return total, pages


async def _products_full(
    ctx: JobContext[SyncProductsPayload], shop: Shop, *, link_vendors: bool
) -> tuple[int, int]:
    newest_id = await shop.client.list("products", display="[id]", sort="[id_DESC]", limit=1)
    max_id = as_int(newest_id[0].get("id")) if newest_id else 0
    last_id = 0
    newest: datetime | None = None
    pages = total = 0
    while True:
        items = await shop.client.list(
            "products",
            display="full",
            filters={"id": f">[{last_id}]"},
            sort="[id_ASC]",
            limit=shop.page_size,
        )
        pages += 1
        total += await _store_products(ctx, shop, items, link_vendors=link_vendors, watermark=None)
        for item in items:
            updated = as_datetime(item.get("date_upd"))
            if updated is not None and (newest is None or updated > newest):
                newest = updated
            last_id = max(last_id, as_int(item.get("id")) or 0)
        percent = max(1, min(99, last_id * 100 // max_id)) if max_id else 99
        await ctx.progress(percent, f"page {pages}: {total} products")
        if len(items) < shop.page_size:
            break
    if newest is not None:
        # Sorted by id, not date: the watermark is safe only once every page is stored.
        async with ctx.resources.sessionmaker() as session:
            await service.advance_watermark(
                session,
                tenant_id=ctx.tenant_id,
                site_id=shop.site_id,
                resource="products",
                watermark=newest,
                job_id=ctx.job_id,
            )
            await session.commit()
    return total, pages
