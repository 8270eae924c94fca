"""A fake PrestaShop Webservice, faithful to what the real one does on the wire.

Built from PrestaShop's own source (its dispatcher, WebserviceRequest, the JSON/XML
renderers and SQLUtils): Basic auth with the key as username (`ws_key` query
fallback), the exact 401 variants, JSON only for an exact `JSON` format, `[]` for empty
lists, 8.x dropping falsy fields of single objects, `display`, `filter[...]` (with `[a,b]`
ranges, `|`, `>`, `<`, `!`, `%`, and date fields only with `date=1`), `sort`, PHP-cast
`limit=offset,count`, multishop scoping, `Local-Content-Sha1` → 304, and fault switches
(PHP warnings, fatal errors, empty 500s, notices before the JSON, a disabled Webservice,
a missing rewrite rule, slow pages, WAF 429/403).

`ThreadedServer` runs any ASGI app under uvicorn on a free 127.0.0.1 port in a thread, so
tests talk to it over real HTTP while keeping direct access to its state.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FieldKind = Literal["int", "decimal", "date", "str", "bool", "ml"]
WWW_AUTHENTICATE = (
    'Basic realm="Welcome to PrestaShop Webservice, please enter the authentication key as '
    'the login. No password required."'
)
DATE_FIELDS = ("date_add", "date_upd")


@dataclass(frozen=True)
class F:
    kind: FieldKind = "str"
    scale: int = 6
    getter: bool = False


@dataclass(frozen=True)
class ResourceSpec:
    plural: str
    singular: str
    fields: dict[str, F]
    associations: tuple[str, ...] = ()
    shop_linked: bool = False


def _spec(
    plural: str,
    singular: str,
    fields: dict[str, F],
    associations: tuple[str, ...] = (),
    *,
    shop_linked: bool = False,
) -> ResourceSpec:
    return ResourceSpec(plural, singular, {"id": F("int"), **fields}, associations, shop_linked)


_I, _S, _B, _D, _ML = F("int"), F("str"), F("bool"), F("date"), F("ml")
_MONEY = F("decimal", 6)

RESOURCES: dict[str, ResourceSpec] = {
    spec.plural: spec
    for spec in (
        _spec(
            "orders",
            "order",
            {
                "id_address_delivery": _I,
                "id_address_invoice": _I,
                "id_cart": _I,
                "id_currency": _I,
                "id_lang": _I,
                "id_customer": _I,
                "id_carrier": _I,
                "current_state": _I,
                "module": _S,
                "invoice_number": _I,
                "invoice_date": _D,
                "delivery_number": _I,
                "delivery_date": _D,
                "valid": _B,
                "date_add": _D,
                "date_upd": _D,
                "shipping_number": F("str", getter=True),
                "note": _S,
                "id_shop_group": _I,
                "id_shop": _I,
                "secure_key": _S,
                "payment": _S,
                "recyclable": _B,
                "gift": _B,
                "gift_message": _S,
                "mobile_theme": _B,
                "total_discounts": _MONEY,
                "total_discounts_tax_incl": _MONEY,
                "total_discounts_tax_excl": _MONEY,
                "total_paid": _MONEY,
                "total_paid_tax_incl": _MONEY,
                "total_paid_tax_excl": _MONEY,
                "total_paid_real": _MONEY,
                "total_products": _MONEY,
                "total_products_wt": _MONEY,
                "total_shipping": _MONEY,
                "total_shipping_tax_incl": _MONEY,
                "total_shipping_tax_excl": _MONEY,
                "carrier_tax_rate": F("decimal", 3),
                "total_wrapping": _MONEY,
                "total_wrapping_tax_incl": _MONEY,
                "total_wrapping_tax_excl": _MONEY,
                "round_mode": _I,
                "round_type": _I,
                "conversion_rate": _MONEY,
                "reference": _S,
            },
            ("order_rows",),
        ),
        _spec(
            "products",
            "product",
            {
                "id_manufacturer": _I,
                "id_supplier": _I,
                "id_category_default": _I,
                "id_default_image": F("int", getter=True),
                "id_tax_rules_group": _I,
                "position_in_category": F("int", getter=True),
                "manufacturer_name": F("str", getter=True),
                "quantity": F("int", getter=True),
                "type": F("str", getter=True),
                "id_shop_default": _I,
                "reference": _S,
                "supplier_reference": _S,
                "ean13": _S,
                "isbn": _S,
                "upc": _S,
                "mpn": _S,
                "ecotax": _MONEY,
                "price": _MONEY,
                "wholesale_price": _MONEY,
                "unit_price_ratio": _MONEY,
                "active": _B,
                "available_for_order": _B,
                "visibility": _S,
                "is_virtual": _B,
                "on_sale": _B,
                "date_add": _D,
                "date_upd": _D,
                "name": _ML,
                "description": _ML,
                "description_short": _ML,
                "link_rewrite": _ML,
            },
            ("categories", "images", "combinations", "stock_availables"),
            shop_linked=True,
        ),
        _spec(
            "product_suppliers",
            "product_supplier",
            {
                "id_product": _I,
                "id_product_attribute": _I,
                "id_supplier": _I,
                "id_currency": _I,
                "product_supplier_reference": _S,
                "product_supplier_price_te": _MONEY,
            },
        ),
        _spec(
            "stock_availables",
            "stock_available",
            {
                "id_product": _I,
                "id_product_attribute": _I,
                "id_shop": _I,
                "id_shop_group": _I,
                "quantity": _I,
                "depends_on_stock": _B,
                "out_of_stock": _I,
                "location": _S,
            },
            shop_linked=True,
        ),
        _spec(
            "order_histories",
            "order_history",
            {"id_employee": _I, "id_order_state": _I, "id_order": _I, "date_add": _D},
        ),
        _spec(
            "order_states",
            "order_state",
            {"name": _ML, "color": _S, "paid": _B, "shipped": _B, "delivery": _B, "deleted": _B},
        ),
        _spec("order_details", "order_detail", {"id_order": _I, "product_id": _I}),
        _spec("suppliers", "supplier", {"name": _S, "active": _B, "date_add": _D, "date_upd": _D}),
        _spec("manufacturers", "manufacturer", {"name": _S, "active": _B, "date_add": _D}),
        _spec(
            "customers",
            "customer",
            {"email": _S, "firstname": _S, "lastname": _S, "id_shop": _I, "date_upd": _D},
        ),
        _spec(
            "addresses",
            "address",
            {"id_customer": _I, "city": _S, "deleted": _B, "date_upd": _D},
        ),
        _spec("shops", "shop", {"name": _S, "id_shop_group": _I, "active": _B}),
        _spec("languages", "language", {"name": _S, "iso_code": _S, "active": _B}),
    )
}


class WsError(Exception):
    """A Webservice error: status + [(code, message)], optionally with WWW-Authenticate."""

    def __init__(
        self, status: int, errors: list[tuple[int, str]], *, challenge: bool = False
    ) -> None:
        super().__init__(errors[0][1] if errors else str(status))
        self.status = status
        self.errors = errors
        self.challenge = challenge


@dataclass
class KeyGrant:
    active: bool = True
    # None: every resource; else only these.
    resources: set[str] | None = None
    # None: every shop; else only these shop ids.
    shops: set[int] | None = None


@dataclass
class Fault:
    kind: str
    times: int = 1
    resource: str | None = None
    after: int = 0
    retry_after: str | None = None
    delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    auth: str  # basic | ws_key | none
    status: int = 0


def php_int(raw: str) -> int:
    """PHP's `(int)` cast of a string: the leading integer, else 0."""
    match = re.match(r"\s*([+-]?\d+)", raw)
    return int(match.group(1)) if match else 0


def _split_top(raw: str) -> list[str]:
    """Split on commas outside brackets: `id,order_rows[a,b]` → [id, order_rows[a,b]]."""
    parts, depth, current = [], 0, ""
    for char in raw:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


class FakePrestaShop:
    """One fake shop: keys, data, faults, and an ASGI `app`.

    `mode`: "8.x" drops falsy top-level fields of single objects (array_filter), "1.7"
    keeps them. `values`: "php81" renders INT columns as JSON numbers, "legacy" renders
    everything but `id` as strings.
    """

    def __init__(
        self,
        *,
        version: str = "8.1.7",
        mode: Literal["8.x", "1.7"] = "8.x",
        values: Literal["php81", "legacy"] = "php81",
        languages: Iterable[int] = (1,),
        shops: Iterable[int] = (1,),
    ) -> None:
        self.version = version
        self.mode = mode
        self.values = values
        self.languages = list(languages)
        self.shops = set(shops)
        self.enabled = True
        self.keys: dict[str, KeyGrant] = {}
        self.data: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in RESOURCES}
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        # Called (in the server thread) before each API request is answered: lets a test
        # change data "between pages".
        self.on_request: Callable[[RecordedRequest], None] | None = None
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/api", self._endpoint, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
                Route(
                    "/api/{rest:path}",
                    self._endpoint,
                    methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
                ),
                Route("/webservice/dispatcher.php", self._endpoint, methods=["GET", "HEAD"]),
                Route("/{rest:path}", self._front_office, methods=["GET", "HEAD"]),
            ]
        )

    # -- set-up ------------------------------------------------------------------------

    def add_key(
        self,
        key: str,
        *,
        active: bool = True,
        resources: Iterable[str] | None = None,
        shops: Iterable[int] | None = None,
    ) -> str:
        self.keys[key] = KeyGrant(
            active=active,
            resources=set(resources) if resources is not None else None,
            shops=set(shops) if shops is not None else None,
        )
        return key

    def put(self, resource: str, record: dict[str, Any]) -> dict[str, Any]:
        """Insert or replace a record (needs `id`); `_shops` scopes shop-linked resources."""
        with self._lock:
            self.data[resource][int(record["id"])] = record
        return record

    def add_order(self, order_id: int, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": order_id,
            "id_customer": 1,
            "id_currency": 1,
            "id_lang": 1,
            "id_shop": 1,
            "id_shop_group": 1,
            "current_state": 2,
            "module": "ps_wirepayment",
            "payment": "Bank wire",
            "valid": 1,
            "gift": 0,
            "recyclable": 0,
            "note": "",
            "secure_key": "b44a6d9efd7a0076a0fbce6b15eaf3b1",
            "total_paid": Decimal("20.23"),
            "total_paid_tax_incl": Decimal("20.23"),
            "total_paid_tax_excl": Decimal("16.86"),
            "carrier_tax_rate": Decimal("20"),
            "reference": f"REF{order_id:06d}",
            "date_add": "2026-01-01 10:00:00",
            "date_upd": "2026-01-01 10:00:00",
            "invoice_date": "0000-00-00 00:00:00",
            "associations": {
                "order_rows": [
                    {
                        "id": order_id * 10,
                        "product_id": 1,
                        "product_attribute_id": 0,
                        "product_quantity": 1,
                        "product_name": "Mug",
                        "product_price": Decimal("16.86"),
                    }
                ]
            },
        }
        record.update(fields)
        return self.put("orders", record)

    def add_product(self, product_id: int, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": product_id,
            "reference": f"SKU-{product_id}",
            "price": Decimal("9.9"),
            "active": 1,
            "quantity": 0,
            "is_virtual": 0,
            "on_sale": 0,
            "id_supplier": 0,
            "id_manufacturer": 0,
            "name": dict.fromkeys(self.languages, f"Product {product_id}"),
            "date_add": "2026-01-01 10:00:00",
            "date_upd": "2026-01-01 10:00:00",
            "_shops": set(self.shops),
            "associations": {"categories": [{"id": 2}]},
        }
        record.update(fields)
        return self.put("products", record)

    def set_order_state(self, order_id: int, state: int, at: str) -> None:
        """What `OrderHistory::changeIdOrderState()` does: history row + bumped date_upd."""
        with self._lock:
            order = self.data["orders"][order_id]
            order["current_state"] = state
            order["date_upd"] = at
            history_id = len(self.data["order_histories"]) + 1
            self.data["order_histories"][history_id] = {
                "id": history_id,
                "id_order": order_id,
                "id_order_state": state,
                "id_employee": 0,
                "date_add": at,
            }

    def inject(
        self,
        kind: str,
        *,
        times: int = 1,
        resource: str | None = None,
        after: int = 0,
        retry_after: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Make the next matching requests fail: php_warning, fatal, empty_500,
        notice_prefix, disabled, html_404, slow, waf_429, waf_403."""
        self.faults.append(Fault(kind, times, resource, after, retry_after, delay))

    def api_requests(self, resource: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if resource is None or r.path.split("/")[0] == resource]

    # -- request handling -----------------------------------------------------------------

    async def _front_office(self, request: Request) -> Response:
        return Response(
            "<html><body><h1>Page not found</h1></body></html>",
            status_code=404,
            media_type="text/html",
        )

    def _take_fault(self, resource: str, phase: set[str]) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.kind not in phase or fault.times <= 0:
                    continue
                if fault.resource is not None and fault.resource != resource:
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.times -= 1
                return fault
        return None

    async def _endpoint(self, request: Request) -> Response:
        started = time.monotonic()
        query = dict(request.query_params)
        if request.url.path.startswith("/webservice/"):
            path = query.pop("url", "")
        else:
            path = request.url.path[len("/api") :]
        path = path.strip("/")
        key, how = self._key(request)
        record = RecordedRequest(request.method, path, query, how)
        self.requests.append(record)
        if self.on_request is not None:
            self.on_request(record)
        resource = path.split("/")[0]
        response = await self._answer(request, path, resource, query, key)
        response.headers["Access-Time"] = str(int(time.time()))
        response.headers["X-Powered-By"] = "PrestaShop Webservice"
        response.headers["Execution-Time"] = f"{time.monotonic() - started:.3f}"
        record.status = response.status_code
        return response

    def _key(self, request: Request) -> tuple[str | None, str]:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            return decoded.partition(":")[0], "basic"
        if "ws_key" in request.query_params:
            return request.query_params["ws_key"], "ws_key"
        return None, "none"

    async def _answer(
        self, request: Request, path: str, resource: str, query: dict[str, str], key: str | None
    ) -> Response:
        early = self._take_fault(resource, {"html_404", "waf_429", "waf_403", "empty_500", "slow"})
        if early is not None:
            if early.kind == "slow":
                await asyncio.sleep(early.delay)
            elif early.kind == "html_404":
                return await self._front_office(request)
            elif early.kind == "waf_429":
                headers = {"Retry-After": early.retry_after} if early.retry_after else {}
                return Response(
                    "<html><body>Too Many Requests</body></html>",
                    status_code=429,
                    media_type="text/html",
                    headers=headers,
                )
            elif early.kind == "waf_403":
                return Response(
                    "<html><body>Forbidden by WAF</body></html>",
                    status_code=403,
                    media_type="text/html",
                )
            else:
                return Response(b"", status_code=500, media_type="text/html")
        if key is None:
            return Response(
                "401 Unauthorized",
                status_code=401,
                media_type="text/html",
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
        as_json = self._wants_json(request, query)
        try:
            body, status = self._serve(request, path, resource, query, key)
        except WsError as exc:
            response = self._render_errors(exc, as_json)
            if exc.challenge:
                response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
            return response
        late = self._take_fault(resource, {"php_warning", "fatal", "notice_prefix"})
        if late is not None and late.kind == "fatal":
            return Response(
                "<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes exhausted "
                "(tried to allocate 20480 bytes) in /var/www/classes/ObjectModel.php on line "
                "1774<br />\n",
                status_code=200,
                media_type="text/html",
            )
        if late is not None and late.kind == "php_warning":
            body = {
                **(body if isinstance(body, dict) else {}),
                "errors": [
                    {
                        "code": 3,
                        "message": "[PHP Warning #2] Trying to access array offset on value of "
                        "type null (/var/www/classes/webservice/WebserviceOutputBuilder.php, "
                        "line 669)",
                    }
                ],
            }
            status = 500
        text = self._encode(body, resource, path, as_json)
        if late is not None and late.kind == "notice_prefix":
            text = (
                "<br />\n<b>Notice</b>:  Undefined index: id_lang in "
                "/var/www/modules/somemodule/somemodule.php on line 42<br />\n" + text
            )
        payload = text.encode()
        sha1 = hashlib.sha1(payload).hexdigest()
        headers = {"PSWS-Version": self.version}
        if payload:
            headers["Content-Sha1"] = sha1
        if status == 200 and request.headers.get("local-content-sha1") == sha1:
            return Response(status_code=304, headers=headers)
        media = "application/json" if as_json else "text/xml"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=media)
        return Response(payload, status_code=status, headers=headers, media_type=media)

    @staticmethod
    def _wants_json(request: Request, query: dict[str, str]) -> bool:
        for value in (
            request.headers.get("io-format"),
            request.headers.get("output-format"),
            query.get("output_format"),
            query.get("io_format"),
        ):
            if value is not None:
                return value == "JSON"  # case-sensitive, like PrestaShop
        return False

    def _serve(
        self, request: Request, path: str, resource: str, query: dict[str, str], key: str
    ) -> tuple[Any, int]:
        if not self.enabled:
            raise WsError(
                503,
                [
                    (
                        22,
                        "The PrestaShop webservice is disabled. Please activate it in the "
                        "PrestaShop Back Office",
                    )
                ],
            )
        if self._take_fault(resource, {"disabled"}) is not None:
            raise WsError(503, [(22, "The PrestaShop webservice is disabled.")])
        grant = self._authenticate(key)
        shop_ids = self._shop_scope(query, grant)
        if request.method not in ("GET", "HEAD"):
            raise WsError(
                405, [(25, f"Method {request.method} is not allowed for this authentication key")]
            )
        if not path:
            if self.mode == "8.x" and self._wants_json(request, query):
                # #32179: array_filter() TypeError on PHP 8, display_errors Off → empty 500.
                raise _EmptyFatal()
            return {"api": sorted(RESOURCES)}, 200
        spec = RESOURCES.get(resource)
        if spec is None:
            raise WsError(
                400,
                [
                    (
                        27,
                        f'Resource of type "{resource}" does not exists. Did you mean: "orders"? '
                        f'The full list is: "{", ".join(sorted(RESOURCES))}"',
                    )
                ],
            )
        if grant.resources is not None and resource not in grant.resources:
            raise WsError(
                401,
                [
                    (
                        26,
                        f'Resource of type "{resource}" is not allowed with this '
                        "authentication key",
                    )
                ],
            )
        parts = path.split("/")
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise WsError(400, [(27, f'Resource of type "{path}" does not exists.')])
        rows = self._visible(spec, shop_ids)
        languages = self._language_scope(query)
        if len(parts) == 2:
            record = next((r for r in rows if int(r["id"]) == int(parts[1])), None)
            if record is None:
                raise _NotFound()
            if "display" in query:
                # renderNodeFooter tests $_GET['display']: any display → the list shape.
                shown = self._display(spec, query["display"], query) or []
                return {spec.plural: [self._render(spec, record, shown, languages)]}, 200
            full = self._display(spec, "full", query) or []
            rendered = self._render(spec, record, full, languages)
            if self.mode == "8.x":
                rendered = {k: v for k, v in rendered.items() if v not in ("0", 0, "", None, [])}
            return {spec.singular: rendered}, 200
        fields = self._display(spec, query.get("display"), query)
        rows = self._filter(spec, rows, query)
        rows = self._sort(spec, rows, query)
        rows = self._limit(rows, query.get("limit"))
        if not rows:
            return [], 200  # PrestaShop renders an empty list as `[]`, with no key
        if fields is None:
            return {spec.plural: [{"id": int(r["id"])} for r in rows]}, 200
        return {spec.plural: [self._render(spec, r, fields, languages) for r in rows]}, 200

    def _authenticate(self, key: str) -> KeyGrant:
        if key == "":
            raise WsError(401, [(17, "Authentication key is empty")], challenge=True)
        if len(key) != 32:
            raise WsError(401, [(18, "Invalid authentication key format")], challenge=True)
        grant = self.keys.get(key)
        if grant is None or not grant.active:
            raise WsError(
                401,
                [
                    (20, "Authentification key is not active"),
                    (21, "No permission for this authentication key"),
                ],
                challenge=True,
            )
        return grant

    def _shop_scope(self, query: dict[str, str], grant: KeyGrant) -> set[int] | None:
        """Shops whose shop-linked rows are visible (None: all)."""
        raw = query.get("id_shop")
        if raw is None:
            context = {min(self.shops)}
        elif raw == "all":
            context = set(self.shops)
        elif raw.isdigit() and int(raw) in self.shops:
            context = {int(raw)}
        else:
            raise WsError(404, [(999, "This shop id does not exist")])
        if grant.shops is not None and not context <= grant.shops:
            raise WsError(403, [(132, "No permission for this key on this shop")])
        if query.get("id_shop_group") or query.get("id_group_shop") or raw == "all":
            return None
        return context

    def _visible(self, spec: ResourceSpec, shop_ids: set[int] | None) -> list[dict[str, Any]]:
        with self._lock:
            rows = sorted(self.data[spec.plural].values(), key=lambda r: int(r["id"]))
        if not spec.shop_linked or shop_ids is None:
            return rows
        return [r for r in rows if set(r.get("_shops", {1})) & shop_ids]

    def _display(
        self, spec: ResourceSpec, raw: str | None, query: dict[str, str]
    ) -> list[str] | None:
        if raw is None:
            return None
        if raw == "full":
            return list(spec.fields) + ["associations"]
        if not (raw.startswith("[") and raw.endswith("]")):
            raise WsError(400, [(36, f'The "display" syntax is wrong: {raw}')])
        wanted = []
        for name in _split_top(raw[1:-1]):
            base = name.split("[", 1)[0]
            if base in spec.associations:
                wanted.append(name)
                continue
            if base not in spec.fields or base == "associations":
                available = ", ".join(spec.fields)
                raise WsError(
                    400,
                    [
                        (
                            35,
                            f'Unable to display this field "{base}". However, these are '
                            f"available: {available}",
                        )
                    ],
                )
            wanted.append(base)
        return wanted

    def _language_scope(self, query: dict[str, str]) -> list[int]:
        raw = query.get("language")
        if raw is None:
            return self.languages
        inner = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        if "," in inner:
            low, high = sorted(php_int(p) for p in inner.split(",")[:2])
            return [lang for lang in self.languages if low <= lang <= high]
        wanted = {php_int(p) for p in inner.split("|")}
        return [lang for lang in self.languages if lang in wanted]

    def _render(
        self,
        spec: ResourceSpec,
        record: dict[str, Any],
        fields: list[str],
        languages: list[int],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in fields:
            if name == "associations" or name.split("[", 1)[0] in spec.associations:
                assoc = record.get("associations") or {}
                chosen = spec.associations if name == "associations" else (name.split("[")[0],)
                rendered = {
                    a: [self._value_plain(item) for item in assoc[a]]
                    for a in chosen
                    if assoc.get(a)  # empty associations are absent
                }
                if name == "associations":
                    if rendered:
                        out["associations"] = rendered
                else:
                    out.setdefault("associations", {}).update(rendered)
                continue
            out[name] = self._value(spec.fields[name], name, record.get(name), languages)
        return out

    def _value(self, spec: F, name: str, value: Any, languages: list[int]) -> Any:
        if name == "id":
            return int(value)
        if spec.kind == "ml":
            by_lang = value if isinstance(value, dict) else dict.fromkeys(languages, value or "")
            if len(languages) == 1:
                return by_lang.get(languages[0], "")
            return [{"id": str(lang), "value": by_lang.get(lang)} for lang in languages]
        if spec.kind == "decimal":
            return f"{Decimal(str(value or 0)):.{spec.scale}f}"
        if spec.kind == "date":
            return value or "0000-00-00 00:00:00"
        if spec.kind == "bool":
            return "1" if value else "0"
        if spec.kind == "int":
            number = int(value or 0)
            return number if self.values == "php81" else str(number)
        return "" if value is None else str(value)

    def _value_plain(self, item: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in item.items():
            if isinstance(v, bool):
                out[k] = "1" if v else "0"
            elif isinstance(v, int):
                out[k] = v if self.values == "php81" else str(v)
            elif isinstance(v, Decimal):
                out[k] = f"{v:.6f}"
            else:
                out[k] = v
        return out

    # -- filters, sort, limit (SQLUtils::getSQLRetrieveFilter and friends) ----------------

    def _filter(
        self, spec: ResourceSpec, rows: list[dict[str, Any]], query: dict[str, str]
    ) -> list[dict[str, Any]]:
        dated = query.get("date") == "1"
        for param, raw in query.items():
            match = re.fullmatch(r"filter\[(.+)\]", param)
            if match is None:
                continue
            name = match.group(1)
            field_spec = spec.fields.get(name)
            if field_spec is None or (name in DATE_FIELDS and not dated):
                names = [f for f in spec.fields if dated or f not in DATE_FIELDS]
                raise WsError(
                    400,
                    [
                        (
                            32,
                            f'This filter does not exist. Did you mean: "id"? The full list is: '
                            f"{', '.join(names)}",
                        )
                    ],
                )
            if field_spec.getter:
                raise WsError(
                    400,
                    [
                        (
                            34,
                            f'The field "{name}" is dynamic. It is not possible to filter GET '
                            "query with this field.",
                        )
                    ],
                )
            if raw == "" or raw in ("[]", "![]", ">[]", "<[]"):
                raise WsError(400, [(33, f'The filter "{name}" is malformed.')])
            test = _predicate(raw)
            rows = [r for r in rows if self._matches(field_spec, r.get(name), test)]
        return rows

    def _matches(self, spec: F, value: Any, test: Callable[[Any, F], bool]) -> bool:
        if spec.kind == "ml":
            values = value.values() if isinstance(value, dict) else [value]
            return any(test(v, spec) for v in values)
        return test(value, spec)

    def _sort(
        self, spec: ResourceSpec, rows: list[dict[str, Any]], query: dict[str, str]
    ) -> list[dict[str, Any]]:
        raw = query.get("sort")
        if raw is None:
            return rows
        dated = query.get("date") == "1"
        inner = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        keys = []
        for part in inner.split(","):
            name, sep, direction = part.strip().rpartition("_")
            if not sep or not name or direction.upper() not in ("ASC", "DESC"):
                raise WsError(
                    400,
                    [
                        (
                            37,
                            f'The "sort" value has to be formed as this example: '
                            f"\"field_ASC\" or '[field_1_DESC,field_2_ASC]' ({raw})",
                        )
                    ],
                )
            if (
                name not in spec.fields
                or spec.fields[name].getter
                or (name in DATE_FIELDS and not dated)
            ):
                raise WsError(
                    400,
                    [
                        (
                            38,
                            f"Unable to filter by this field. However, these are "
                            f"available: {', '.join(spec.fields)}",
                        )
                    ],
                )
            keys.append((name, direction.upper() == "DESC"))
        for name, descending in reversed(keys):
            field_spec = spec.fields[name]
            rows = sorted(
                rows, key=lambda r: _sort_key(field_spec, r.get(name)), reverse=descending
            )
        return rows

    @staticmethod
    def _limit(rows: list[dict[str, Any]], raw: str | None) -> list[dict[str, Any]]:
        if raw is None:
            return rows
        parts = raw.split(",")
        if len(parts) > 2:
            raise WsError(400, [(39, 'The "limit" value has to be formed as this example: "5,25"')])
        if len(parts) == 1:
            return rows[: max(0, php_int(parts[0]))]
        offset, count = php_int(parts[0]), php_int(parts[1])
        return rows[max(0, offset) : max(0, offset) + max(0, count)]

    # -- output --------------------------------------------------------------------------

    def _encode(self, body: Any, resource: str, path: str, as_json: bool) -> str:
        if as_json:
            # PHP's json_encode escapes "/" and leaves Unicode raw.
            return json.dumps(body, ensure_ascii=False).replace("/", "\\/")
        return _to_xml(body, resource, path)

    def _render_errors(self, exc: WsError, as_json: bool) -> Response:
        if isinstance(exc, _NotFound):
            return Response(b"", status_code=404, media_type="text/html")
        if isinstance(exc, _EmptyFatal):
            return Response(b"", status_code=500, media_type="text/html")
        if as_json:
            text = json.dumps(
                {"errors": [{"code": code, "message": msg} for code, msg in exc.errors]}
            )
            media = "application/json"
        else:
            items = "\n".join(
                f"<error>\n<code><![CDATA[{code}]]></code>\n<message><![CDATA[{msg}]]></message>"
                "\n</error>"
                for code, msg in exc.errors
            )
            text = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<prestashop xmlns:xlink="http://www.w3.org/1999/xlink">\n<errors>\n'
                f"{items}\n</errors>\n</prestashop>\n"
            )
            media = "text/xml"
        payload = text.encode()
        return Response(
            payload,
            status_code=exc.status,
            media_type=media,
            headers={"Content-Sha1": hashlib.sha1(payload).hexdigest()},
        )


class _NotFound(WsError):
    def __init__(self) -> None:
        super().__init__(404, [])


class _EmptyFatal(WsError):
    def __init__(self) -> None:
        super().__init__(500, [])


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value).strip())
    except ArithmeticError:
        return None


def _compare_value(spec: F, value: Any) -> Any:
    if spec.kind in ("int", "decimal", "bool"):
        if spec.kind == "bool":
            return Decimal(1 if value else 0)
        return _number(value if value is not None else 0)
    if spec.kind == "date":
        return value or "0000-00-00 00:00:00"
    return "" if value is None else str(value)


def _sort_key(spec: F, value: Any) -> Any:
    compared = _compare_value(spec, value)
    return (compared is None, compared if compared is not None else 0)


def _equal(spec: F, value: Any, wanted: str) -> bool:
    current = _compare_value(spec, value)
    if isinstance(current, Decimal):
        other = _number(wanted)
        return other is not None and current == other
    return str(current).lower() == wanted.lower()


def _predicate(raw: str) -> Callable[[Any, F], bool]:
    """The filter grammar of SQLUtils::getSQLRetrieveFilter."""
    like = re.fullmatch(r"(%?)\[(.*)\](%?)", raw)
    if like and (like.group(1) or like.group(3)):
        pattern = (".*" if like.group(1) else "^") + re.escape(like.group(2).lower())
        pattern += ".*" if like.group(3) else "$"
        return lambda v, s: re.match(pattern, str(_compare_value(s, v)).lower()) is not None
    for prefix, op in ((">[", "gt"), ("<[", "lt")):
        if raw.startswith(prefix) and raw.endswith("]"):
            bound = raw[2:-1]

            def strict(v: Any, s: F, bound: str = bound, op: str = op) -> bool:
                current = _compare_value(s, v)
                other: Any = _number(bound) if isinstance(current, Decimal) else bound
                if other is None:
                    return False
                return bool(current > other) if op == "gt" else bool(current < other)

            return strict
    if raw.startswith("![") and raw.endswith("]"):
        excluded = raw[2:-1].split("|")
        return lambda v, s: not any(_equal(s, v, x) for x in excluded)
    if raw.startswith("[") and raw.endswith("]"):
        inner = raw[1:-1]
        bounds = inner.split(",")
        if len(bounds) == 2 and all(re.fullmatch(r"[\d.:\- ]+", b) for b in bounds):
            low, high = sorted(bounds)

            def between(v: Any, s: F) -> bool:
                current = _compare_value(s, v)
                if isinstance(current, Decimal):
                    lo, hi = sorted((_number(low) or Decimal(0), _number(high) or Decimal(0)))
                    return lo <= current <= hi
                return low <= str(current) <= high

            return between
        options = inner.split("|")
        return lambda v, s: any(_equal(s, v, x) for x in options)
    return lambda v, s: _equal(s, v, raw)


def _xml_value(value: Any) -> str:
    if isinstance(value, list):
        return "".join(
            f"<language id={quoteattr(str(item.get('id')))}><![CDATA[{item.get('value') or ''}]]>"
            "</language>"
            for item in value
        )
    return f"<![CDATA[{'' if value is None else value}]]>"


def _to_xml(body: Any, resource: str, path: str) -> str:
    spec = RESOURCES.get(resource)
    head = '<?xml version="1.0" encoding="UTF-8"?>\n<prestashop xmlns:xlink="http://www.w3.org/1999/xlink">\n'
    if spec is None:
        names = body.get("api", []) if isinstance(body, dict) else []
        inner = "".join(f'<{name} xlink:href="/api/{name}"/>\n' for name in names)
        return f"{head}<api>\n{inner}</api>\n</prestashop>\n"
    if isinstance(body, list) or not body:
        return f"{head}<{spec.plural}>\n</{spec.plural}>\n</prestashop>\n"

    def node(item: dict[str, Any]) -> str:
        if list(item) == ["id"]:
            return (
                f'<{spec.singular} id="{item["id"]}" '
                f'xlink:href="/api/{spec.plural}/{item["id"]}"/>\n'
            )
        fields = "".join(
            f"<{k}>{_xml_value(v)}</{k}>\n" for k, v in item.items() if k != "associations"
        )
        return f"<{spec.singular}>\n{fields}</{spec.singular}>\n"

    if spec.singular in body:
        return head + node(body[spec.singular]) + "</prestashop>\n"
    items = "".join(node(item) for item in body.get(spec.plural, []))
    return f"{head}<{spec.plural}>\n{items}</{spec.plural}>\n</prestashop>\n"


# -- running ASGI apps over real HTTP ------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ThreadedServer:
    """An ASGI app under uvicorn in a background thread, on a free loopback port."""

    app: Any
    startup_timeout: float = 30.0
    port: int = 0
    _server: uvicorn.Server | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        for _ in range(3):
            self.port = free_port()
            config = uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + self.startup_timeout
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if server.started:
                self._server, self._thread = server, thread
                return self
            server.should_exit = True
            thread.join(timeout=5)
        raise RuntimeError("the test server did not start")

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = self._thread = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
