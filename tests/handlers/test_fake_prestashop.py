"""The fake shop behaves like PrestaShop's Webservice where the sync client depends on it."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.handlers.conftest import SHOP_KEY
from tests.support.fake_prestashop import FakePrestaShop, ThreadedServer

Shop = tuple[FakePrestaShop, ThreadedServer]


def _get(server: ThreadedServer, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]


JSON = {"output_format": "JSON"}
AUTH = (SHOP_KEY, "")


class TestAuth:
    def test_no_key_is_a_plain_401_with_a_challenge_even_for_json(self, fake_shop: Shop) -> None:
        _, server = fake_shop
        response = _get(server, "/api/orders", params=JSON)
        assert response.status_code == 401
        assert response.text == "401 Unauthorized"
        assert response.headers["www-authenticate"].startswith('Basic realm="Welcome')
        assert "psws-version" not in response.headers

    @pytest.mark.parametrize(
        ("key", "codes"),
        [("short", [18]), ("X" * 32, [20, 21]), ("", [17])],
    )
    def test_bad_keys_get_coded_errors(self, fake_shop: Shop, key: str, codes: list[int]) -> None:
        _, server = fake_shop
        response = _get(server, "/api/orders", params=JSON, auth=(key, ""))
        assert response.status_code == 401
        assert [e["code"] for e in response.json()["errors"]] == codes
        assert "www-authenticate" in response.headers

    def test_ws_key_query_is_the_fallback_and_basic_wins(self, fake_shop: Shop) -> None:
        _, server = fake_shop
        assert _get(server, "/api/orders", params={**JSON, "ws_key": SHOP_KEY}).status_code == 200
        both = _get(server, "/api/orders", params={**JSON, "ws_key": SHOP_KEY}, auth=("x", ""))
        assert both.status_code == 401

    def test_resource_not_granted_is_401_code_26_without_challenge(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        limited = shop.add_key("L" * 32, resources={"products"})
        response = _get(server, "/api/orders", params=JSON, auth=(limited, ""))
        assert response.status_code == 401
        assert response.json()["errors"][0]["code"] == 26
        assert "www-authenticate" not in response.headers


class TestShapes:
    def test_empty_list_is_a_bare_json_array(self, fake_shop: Shop) -> None:
        _, server = fake_shop
        response = _get(server, "/api/orders", params=JSON, auth=AUTH)
        assert response.status_code == 200
        assert response.json() == []
        assert response.headers["psws-version"] == "8.1.7"
        assert response.headers["content-sha1"] == hashlib.sha1(response.content).hexdigest()

    def test_format_is_case_sensitive(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        shop.add_order(1)
        response = _get(server, "/api/orders", params={"output_format": "json"}, auth=AUTH)
        assert response.headers["content-type"].startswith("text/xml")
        assert '<order id="1"' in response.text

    def test_single_drops_falsy_fields_and_display_gives_the_list_shape(
        self, fake_shop: Shop
    ) -> None:
        shop, server = fake_shop
        shop.add_order(5)
        single = _get(server, "/api/orders/5", params=JSON, auth=AUTH).json()["order"]
        assert "gift" not in single
        assert "note" not in single
        assert single["id"] == 5
        assert single["id_customer"] == 1
        assert single["total_paid"] == "20.230000"
        assert single["carrier_tax_rate"] == "20.000"
        full = _get(server, "/api/orders/5", params={**JSON, "display": "full"}, auth=AUTH)
        assert full.json()["orders"][0]["gift"] == "0"
        missing = _get(server, "/api/orders/99", params=JSON, auth=AUTH)
        assert missing.status_code == 404
        assert missing.content == b""

    def test_legacy_values_are_strings_except_id(self) -> None:
        shop = FakePrestaShop(mode="1.7", values="legacy", languages=(1, 2))
        shop.add_key(SHOP_KEY)
        shop.add_product(3, name={1: "Mug", 2: "Tasse"})
        with ThreadedServer(shop.app) as server:
            body = _get(server, "/api/products/3", params=JSON, auth=AUTH).json()["product"]
        assert body["id"] == 3
        assert body["id_supplier"] == "0"
        assert body["quantity"] == "0"
        assert body["name"] == [{"id": "1", "value": "Mug"}, {"id": "2", "value": "Tasse"}]

    def test_local_content_sha1_gives_304(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        shop.add_order(1)
        first = _get(server, "/api/orders", params=JSON, auth=AUTH)
        again = _get(
            server,
            "/api/orders",
            params=JSON,
            auth=AUTH,
            headers={"Local-Content-Sha1": first.headers["content-sha1"]},
        )
        assert again.status_code == 304
        assert again.content == b""

    def test_dispatcher_route_works_without_rewriting(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        shop.add_order(7)
        response = _get(
            server, "/webservice/dispatcher.php", params={**JSON, "url": "orders/7"}, auth=AUTH
        )
        assert response.json()["order"]["id"] == 7


class TestQueries:
    def test_limit_pages_and_casts_like_php(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        for i in range(1, 8):
            shop.add_order(i)
        page = _get(server, "/api/orders", params={**JSON, "limit": "5,5"}, auth=AUTH).json()
        assert [o["id"] for o in page["orders"]] == [6, 7]
        bracketed = _get(server, "/api/orders", params={**JSON, "limit": "[5,2]"}, auth=AUTH)
        assert [o["id"] for o in bracketed.json()["orders"]] == [1, 2]  # "[5" casts to 0
        past = _get(server, "/api/orders", params={**JSON, "limit": "50,5"}, auth=AUTH)
        assert past.json() == []
        bad = _get(server, "/api/orders", params={**JSON, "limit": "1,2,3"}, auth=AUTH)
        assert bad.status_code == 400
        assert bad.json()["errors"][0]["code"] == 39

    def test_date_filters_need_date_1_and_ranges_are_inclusive(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        shop.add_order(1, date_upd="2026-01-01 00:00:00")
        shop.add_order(2, date_upd="2026-01-02 00:00:00")
        shop.add_order(3, date_upd="2026-01-03 00:00:00")
        window = {"filter[date_upd]": "[2026-01-02 00:00:00,2026-01-01 00:00:00]"}
        refused = _get(server, "/api/orders", params={**JSON, **window}, auth=AUTH)
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["code"] == 32
        sorted_without_date = _get(
            server, "/api/orders", params={**JSON, "sort": "[date_upd_ASC]"}, auth=AUTH
        )
        assert sorted_without_date.json()["errors"][0]["code"] == 38
        found = _get(server, "/api/orders", params={**JSON, **window, "date": "1"}, auth=AUTH)
        assert [o["id"] for o in found.json()["orders"]] == [1, 2]

    def test_filter_grammar(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        for i in range(1, 6):
            shop.add_order(i, reference=f"REF{i}", current_state=i % 2)

        def ids(**params: str) -> list[int]:
            body = _get(server, "/api/orders", params={**JSON, **params}, auth=AUTH).json()
            return [o["id"] for o in body["orders"]] if body else []

        assert ids(**{"filter[id]": "[2|4]"}) == [2, 4]
        assert ids(**{"filter[id]": ">[3]"}) == [4, 5]
        assert ids(**{"filter[id]": "![1|2]"}) == [3, 4, 5]
        assert ids(**{"filter[reference]": "[ref3]%"}) == [3]
        assert ids(**{"filter[current_state]": "1", "filter[id]": "<[4]"}) == [1, 3]
        assert ids(**{"sort": "[current_state_DESC,id_DESC]"}) == [5, 3, 1, 4, 2]
        dynamic = _get(
            server, "/api/orders", params={**JSON, "filter[shipping_number]": "[x]"}, auth=AUTH
        )
        assert dynamic.json()["errors"][0]["code"] == 34
        unknown = _get(server, "/api/orders", params={**JSON, "display": "[nope]"}, auth=AUTH)
        assert unknown.json()["errors"][0]["code"] == 35

    def test_products_are_scoped_to_the_shop_but_orders_are_not(self) -> None:
        shop = FakePrestaShop(shops=(1, 2))
        shop.add_key(SHOP_KEY)
        shop.add_product(1, _shops={1})
        shop.add_product(2, _shops={2})
        shop.add_order(1, id_shop=1)
        shop.add_order(2, id_shop=2)
        with ThreadedServer(shop.app) as server:
            products = _get(server, "/api/products", params={**JSON, "id_shop": "2"}, auth=AUTH)
            orders = _get(server, "/api/orders", params={**JSON, "id_shop": "2"}, auth=AUTH)
            bad = _get(server, "/api/orders", params={**JSON, "id_shop": "x"}, auth=AUTH)
        assert [p["id"] for p in products.json()["products"]] == [2]
        assert [o["id"] for o in orders.json()["orders"]] == [1, 2]
        assert bad.status_code == 404
        assert bad.json()["errors"][0]["code"] == 999

    def test_state_change_bumps_date_upd_and_adds_history(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        shop.add_order(1)
        shop.set_order_state(1, 4, "2026-02-01 12:00:00")
        order = _get(server, "/api/orders/1", params=JSON, auth=AUTH).json()["order"]
        assert order["date_upd"] == "2026-02-01 12:00:00"
        assert order["current_state"] == 4
        history = _get(
            server, "/api/order_histories", params={**JSON, "display": "full"}, auth=AUTH
        ).json()["order_histories"]
        assert history[0]["id_order_state"] == 4


class TestFaults:
    def test_fault_switches(self, fake_shop: Shop) -> None:
        shop, server = fake_shop
        shop.add_order(1)
        shop.inject("php_warning")
        warned = _get(server, "/api/orders", params=JSON, auth=AUTH)
        assert warned.status_code == 500
        assert warned.json()["errors"][0]["code"] == 3
        assert warned.json()["orders"]  # data rendered before the warning
        shop.inject("fatal")
        fatal = _get(server, "/api/orders", params=JSON, auth=AUTH)
        assert fatal.status_code == 200
        assert "Fatal error" in fatal.text
        shop.inject("waf_429", retry_after="7")
        limited = _get(server, "/api/orders", params=JSON, auth=AUTH)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "7"
        shop.inject("html_404")
        assert _get(server, "/api/orders", params=JSON, auth=AUTH).status_code == 404
        shop.enabled = False
        disabled = _get(server, "/api/orders", params=JSON, auth=AUTH)
        assert disabled.status_code == 503
        assert disabled.json()["errors"][0]["code"] == 22
        shop.enabled = True
        assert _get(server, "/api/orders", params=JSON, auth=AUTH).status_code == 200

    def test_api_root_json_is_a_500_on_8x(self, fake_shop: Shop) -> None:
        _, server = fake_shop
        response = _get(server, "/api/", params=JSON, auth=AUTH)
        assert response.status_code == 500
        assert response.content == b""
