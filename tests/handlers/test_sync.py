"""PrestaShop sync handlers against the fake shop over real HTTP."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.consumer.registry import PermanentFailure, RetryLater
from app.handlers import service
from app.handlers.models import PsOrder, PsProduct, PsSyncState, ShopConnection
from app.handlers.prestashop import PrestaShopUnavailable
from app.handlers.shop_url import ShopUrlGuard
from tests.handlers.conftest import SHOP_KEY, MakeRun
from tests.support.fake_prestashop import FakePrestaShop, ThreadedServer

pytestmark = pytest.mark.asyncio
Shop = tuple[FakePrestaShop, ThreadedServer]


async def connect(
    runtime: Runtime,
    tenant_id: str,
    base_url: str,
    *,
    key: str = SHOP_KEY,
    site_id: str = "shop-1",
    default: bool = False,
    timezone: str = "UTC",
) -> None:
    async with runtime.sessionmaker() as session:
        await service.set_shop_connection(
            session,
            tenant_id=tenant_id,
            site_id=site_id,
            base_url=base_url,
            key=key,
            box=runtime.box,
            guard=ShopUrlGuard(allow_private=True),  # the fake shop is on 127.0.0.1
            timezone=timezone,
            make_default=default,
        )
        await session.commit()


def shop_time(now_ms: int, delta: timedelta = timedelta()) -> str:
    """The shop's wall time (the test shops are on UTC) `delta` from now."""
    moment = datetime.fromtimestamp(now_ms / 1000, tz=UTC).replace(tzinfo=None) + delta
    return moment.strftime("%Y-%m-%d %H:%M:%S")


async def count(runtime: Runtime, model: type[PsOrder] | type[PsProduct], tenant_id: str) -> int:
    async with runtime.sessionmaker() as session:
        result = await session.execute(
            select(func.count()).select_from(model).where(model.tenant_id == tenant_id)  # type: ignore[arg-type]
        )
        return int(result.scalar_one())


class TestSyncOrders:
    async def test_pages_upsert_idempotently_and_report_progress_per_page(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        now_ms = runtime.clock.now_ms()
        for i in range(1, 26):  # 3 pages of 10
            shop.add_order(i, date_upd=shop_time(now_ms, timedelta(hours=-30 + i)))
        shop.add_order(99, date_upd=shop_time(now_ms, timedelta(days=-50)))  # outside lastDays
        await connect(runtime, tenant_id, server.base_url)
        payload = {"siteId": "shop-1", "lastDays": 40, "bulkMode": True}

        first = make_run("sync-orders", payload, tenant_id=tenant_id)
        await first()
        assert await count(runtime, PsOrder, tenant_id) == 25
        pages = [c for c in first.progress.calls if c[1] and c[1].startswith("page")]
        assert [m for _, m in pages] == [
            "page 1: 10 orders",
            "page 2: 19 orders",
            "page 3: 25 orders",
        ]
        assert pages[0][0] < pages[1][0] < pages[2][0] < 100
        assert first.progress.calls[-1][0] == 100

        second = make_run("sync-orders", payload, tenant_id=tenant_id)
        await second()
        assert await count(runtime, PsOrder, tenant_id) == 25  # one row per order

        listing = list(shop.api_requests("orders"))
        assert listing[0].auth == "basic"
        assert listing[0].query["date"] == "1"
        assert listing[0].query["sort"] == "[date_upd_ASC,id_ASC]"
        assert listing[0].query["limit"] == "0,10"
        assert listing[0].query["filter[date_upd]"].startswith("[")
        # Page 2 restarts at the second of order 10 (inclusive): 3 requests for 25 orders.
        order_10 = shop_time(now_ms, timedelta(hours=-20))
        assert listing[1].query["filter[date_upd]"].startswith(f"[{order_10},")
        assert "filter[id]" not in listing[1].query
        assert len(listing) == 6  # two runs

        async with runtime.sessionmaker() as session:
            order = await session.get(PsOrder, (tenant_id, "shop-1", 7))
            state = await session.get(PsSyncState, (tenant_id, "shop-1", "orders"))
            connection = (await session.execute(select(ShopConnection))).scalars().one()
        assert order is not None
        assert order.total_paid == Decimal("20.23")
        assert order.reference == "REF000007"
        assert "secure_key" not in order.data
        assert order.data["associations"]["order_rows"][0]["product_name"] == "Mug"
        assert state is not None
        assert state.watermark == datetime.strptime(
            shop_time(now_ms, timedelta(hours=-5)), "%Y-%m-%d %H:%M:%S"
        )
        assert connection.ps_version == "8.1.7"

    async def test_keyset_paging_survives_many_rows_in_one_second_and_concurrent_updates(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        now_ms = runtime.clock.now_ms()
        same_second = shop_time(now_ms, timedelta(hours=-2))
        for i in range(1, 24):  # 23 orders updated in the same second, 10 per page
            shop.add_order(i, date_upd=same_second)
        shop.add_order(30, date_upd=shop_time(now_ms, timedelta(hours=-1)))

        def update_order_1_after_the_first_page(request: object) -> None:
            # Offset paging would now skip order 11 (everything shifts down by one).
            if len(shop.api_requests("orders")) == 2:
                shop.set_order_state(1, 6, shop_time(now_ms, timedelta(minutes=-1)))

        shop.on_request = update_order_1_after_the_first_page
        await connect(runtime, tenant_id, server.base_url)
        run = make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)
        await run()
        assert await count(runtime, PsOrder, tenant_id) == 24
        queries = [r.query for r in shop.api_requests("orders")]
        assert {q["limit"] for q in queries} == {"0,10"}  # never an offset
        assert queries[1]["filter[date_upd]"] == f"[{same_second},{same_second}]"
        assert queries[1]["filter[id]"] == ">[10]"
        async with runtime.sessionmaker() as session:
            order = await session.get(PsOrder, (tenant_id, "shop-1", 1))
        assert order is not None
        assert order.current_state == 6  # re-read after it moved

    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_no_order_is_skipped_while_orders_change_during_the_sync(
        self, seed: int, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        rng = random.Random(seed)
        now_ms = runtime.clock.now_ms()
        seconds = [shop_time(now_ms, timedelta(hours=-10, seconds=s)) for s in range(8)]
        for i in range(1, 61):  # 60 orders crowded into 8 seconds, 10 per page
            shop.add_order(i, date_upd=rng.choice(seconds))
        minute = iter(range(1, 10_000))

        def touch_random_orders(request: object) -> None:
            for _ in range(rng.randint(0, 3)):
                moved_to = shop_time(now_ms, timedelta(hours=-5, minutes=next(minute)))
                shop.set_order_state(rng.randint(1, 60), 9, moved_to)

        shop.on_request = touch_random_orders
        await connect(runtime, tenant_id, server.base_url)
        await make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)()
        assert await count(runtime, PsOrder, tenant_id) == 60
        limits = {r.query["limit"] for r in shop.api_requests("orders")}
        assert limits == {"0,10"}

    async def test_an_older_read_never_overwrites_a_newer_row(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        now_ms = runtime.clock.now_ms()
        shop.add_order(1, date_upd=shop_time(now_ms, timedelta(hours=-1)), current_state=4)
        await connect(runtime, tenant_id, server.base_url)
        await make_run("sync-single-order", {"orderId": 1}, tenant_id=tenant_id)()
        # The shop (e.g. a stale replica) now serves an older version of the order.
        shop.add_order(1, date_upd=shop_time(now_ms, timedelta(hours=-3)), current_state=2)
        await make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)()
        async with runtime.sessionmaker() as session:
            order = await session.get(PsOrder, (tenant_id, "shop-1", 1))
        assert order is not None
        assert order.current_state == 4

    async def test_gentle_mode_lists_ids_then_fetches_each_order(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        now_ms = runtime.clock.now_ms()
        for i in range(1, 4):
            shop.add_order(i, date_upd=shop_time(now_ms, timedelta(minutes=-i)), gift=0)
        await connect(runtime, tenant_id, server.base_url)
        await make_run(
            "sync-orders", {"siteId": "shop-1", "bulkMode": False}, tenant_id=tenant_id
        )()
        paths = [r.path for r in shop.api_requests("orders")]
        assert paths[0] == "orders"
        assert sorted(paths[1:]) == ["orders/1", "orders/2", "orders/3"]
        async with runtime.sessionmaker() as session:
            order = await session.get(PsOrder, (tenant_id, "shop-1", 2))
        assert order is not None
        assert order.data["gift"] == "0"  # display=full keeps what 8.x drops from singles

    async def test_bad_key_fails_permanently(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        _, server = fake_shop
        await connect(runtime, tenant_id, server.base_url, key="Z" * 32)
        with pytest.raises(PermanentFailure, match="401"):
            await make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)()

    async def test_server_errors_are_transient(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        now_ms = runtime.clock.now_ms()
        for i in range(1, 15):
            shop.add_order(i, date_upd=shop_time(now_ms, timedelta(minutes=-i)))
        await connect(runtime, tenant_id, server.base_url)
        run = make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)
        for kind in ("empty_500", "php_warning", "fatal", "notice_prefix"):
            # The second page fails: the first page stays committed.
            shop.inject(kind, resource="orders", after=1)
            with pytest.raises(PrestaShopUnavailable):
                await run()
            assert not isinstance(PrestaShopUnavailable("x"), PermanentFailure | RetryLater)
            assert await count(runtime, PsOrder, tenant_id) == 10
        await run()
        assert await count(runtime, PsOrder, tenant_id) == 14

    async def test_429_with_retry_after_asks_for_a_later_retry(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        await connect(runtime, tenant_id, server.base_url)
        shop.inject("waf_429", retry_after="42")
        with pytest.raises(RetryLater) as caught:
            await make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)()
        assert caught.value.delay_seconds == 42

    async def test_missing_shop_or_rewrite_rule_fails_permanently(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        with pytest.raises(PermanentFailure, match="no shop"):
            await make_run("sync-orders", {"siteId": "nope"}, tenant_id=tenant_id)()
        await connect(runtime, tenant_id, server.base_url)
        shop.inject("html_404")
        with pytest.raises(PermanentFailure, match="rewriting"):
            await make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)()

    async def test_the_key_never_reaches_the_logs(
        self,
        fake_shop: Shop,
        runtime: Runtime,
        tenant_id: str,
        make_run: MakeRun,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        shop, server = fake_shop
        shop.add_order(1, date_upd=shop_time(runtime.clock.now_ms(), timedelta(minutes=-1)))
        await connect(runtime, tenant_id, server.base_url)
        caplog.set_level(logging.DEBUG)
        await make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)()
        shop.inject("php_warning")
        with pytest.raises(PrestaShopUnavailable) as caught:
            await make_run("sync-orders", {"siteId": "shop-1"}, tenant_id=tenant_id)()
        shop.keys.clear()
        with pytest.raises(PermanentFailure) as refused:
            await make_run("sync-single-order", {"orderId": 1}, tenant_id=tenant_id)()
        assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx logged
        logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
        assert SHOP_KEY not in logged
        for exc in (caught.value, refused.value):
            assert SHOP_KEY not in str(exc)
            assert SHOP_KEY not in repr(exc)
        async with runtime.sessionmaker() as session:
            stored = (await session.execute(select(ShopConnection))).scalars().one()
        assert SHOP_KEY not in stored.key_encrypted
        assert runtime.box.decrypt(stored.key_encrypted) == SHOP_KEY


class TestSyncSingleOrder:
    async def test_fetches_one_order_from_the_default_shop(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        shop.add_order(42, total_paid=Decimal("99.5"))
        other = FakePrestaShop()
        other.add_key(SHOP_KEY)
        other.add_order(42, total_paid=Decimal("1"))
        with ThreadedServer(other.app) as other_server:
            await connect(runtime, tenant_id, server.base_url, site_id="main")
            await connect(runtime, tenant_id, other_server.base_url, site_id="outlet")
            await make_run("sync-single-order", {"orderId": 42}, tenant_id=tenant_id)()
            await make_run(
                "sync-single-order", {"orderId": 42, "siteId": "outlet"}, tenant_id=tenant_id
            )()
        assert [r.path for r in shop.api_requests()] == ["orders/42"]
        assert shop.api_requests()[0].query["display"] == "full"
        async with runtime.sessionmaker() as session:
            main = await session.get(PsOrder, (tenant_id, "main", 42))
            outlet = await session.get(PsOrder, (tenant_id, "outlet", 42))
        assert main is not None
        assert outlet is not None
        assert main.total_paid == Decimal("99.5")
        assert outlet.total_paid == Decimal("1")

    async def test_unknown_order_fails_permanently(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        _, server = fake_shop
        await connect(runtime, tenant_id, server.base_url)
        with pytest.raises(PermanentFailure, match="not found"):
            await make_run("sync-single-order", {"orderId": 5}, tenant_id=tenant_id)()

    async def test_legacy_17_shop_values_parse(
        self, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop = FakePrestaShop(version="1.7.8.11", mode="1.7", values="legacy")
        shop.add_key(SHOP_KEY)
        shop.add_order(8, id_customer=532822, current_state=3)
        with ThreadedServer(shop.app) as server:
            await connect(runtime, tenant_id, server.base_url)
            await make_run("sync-single-order", {"orderId": 8}, tenant_id=tenant_id)()
        async with runtime.sessionmaker() as session:
            order = await session.get(PsOrder, (tenant_id, "shop-1", 8))
        assert order is not None
        assert order.id_customer == 532822
        assert order.current_state == 3
        assert order.data["id_customer"] == "532822"


class TestSyncProducts:
    async def test_full_then_incremental_from_the_watermark(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        for i in range(1, 13):
            shop.add_product(i, date_upd=f"2026-01-{i:02d} 08:00:00", id_supplier=7)
        shop.put(
            "product_suppliers",
            {
                "id": 1,
                "id_product": 3,
                "id_product_attribute": 0,
                "id_supplier": 7,
                "id_currency": 1,
                "product_supplier_reference": "V-3",
                "product_supplier_price_te": Decimal("4.5"),
            },
        )
        await connect(runtime, tenant_id, server.base_url)
        first = make_run("sync-products", {"siteId": "shop-1"}, tenant_id=tenant_id)
        await first()
        assert await count(runtime, PsProduct, tenant_id) == 12
        assert [m for _, m in first.progress.calls if m and m.startswith("page")] == [
            "page 1: 10 products",
            "page 2: 12 products",
        ]
        listing = [r.query for r in shop.api_requests("products") if "filter[id]" in r.query]
        assert [q["filter[id]"] for q in listing] == [">[0]", ">[10]"]
        async with runtime.sessionmaker() as session:
            product = await session.get(PsProduct, (tenant_id, "shop-1", 3))
            watermark = await service.get_watermark(
                session, tenant_id=tenant_id, site_id="shop-1", resource="products"
            )
        assert product is not None
        assert product.name == "Product 3"
        assert product.price == Decimal("9.9")
        assert product.suppliers is not None
        assert product.suppliers[0]["reference"] == "V-3"
        assert watermark == datetime(2026, 1, 12, 8, 0, 0)

        shop.requests.clear()
        shop.add_product(5, date_upd="2026-01-20 09:00:00", price=Decimal("12"), id_supplier=7)
        second = make_run(
            "sync-products", {"siteId": "shop-1", "linkVendors": False}, tenant_id=tenant_id
        )
        await second()
        query = shop.api_requests("products")[0].query
        assert query["filter[date_upd]"].startswith("[2026-01-12 07:59:00,")
        assert query["date"] == "1"
        async with runtime.sessionmaker() as session:
            product = await session.get(PsProduct, (tenant_id, "shop-1", 5))
            kept = await session.get(PsProduct, (tenant_id, "shop-1", 3))
            watermark = await service.get_watermark(
                session, tenant_id=tenant_id, site_id="shop-1", resource="products"
            )
        assert product is not None
        assert product.price == Decimal("12")
        assert kept is not None
        assert kept.suppliers is not None  # not fetched this time, so kept
        assert watermark == datetime(2026, 1, 20, 9, 0, 0)
        assert await count(runtime, PsProduct, tenant_id) == 12
        assert not shop.api_requests("product_suppliers")


class TestShopTime:
    async def test_date_windows_are_in_the_shops_time_zone(
        self, fake_shop: Shop, runtime: Runtime, tenant_id: str, make_run: MakeRun
    ) -> None:
        shop, server = fake_shop
        await connect(runtime, tenant_id, server.base_url, timezone="Asia/Kolkata")
        await make_run("sync-orders", {"siteId": "shop-1", "lastDays": 1}, tenant_id=tenant_id)()
        window = shop.api_requests("orders")[0].query["filter[date_upd]"]
        low, high = (datetime.strptime(p, "%Y-%m-%d %H:%M:%S") for p in window[1:-1].split(","))
        utc_now = datetime.fromtimestamp(runtime.clock.now_ms() / 1000, tz=UTC)
        kolkata_now = utc_now.replace(tzinfo=None) + timedelta(hours=5, minutes=30)
        assert abs(low - (kolkata_now - timedelta(days=1))) < timedelta(seconds=2)
        assert abs(high - (kolkata_now + timedelta(hours=1))) < timedelta(seconds=2)
