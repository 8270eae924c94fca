"""A small PrestaShop Webservice client (the key-based `/api/...`, 1.7 to 9.x).

Guarantees:
- The Webservice key travels only as the HTTP Basic username, never in a URL, and never
  appears in an exception message or `repr` (so it cannot reach a log).
- Every answer is classified: `PrestaShopAuthError` (401/403) and `PrestaShopRequestError`
  (400/404/405) are permanent; `PrestaShopRateLimited` (429, or 503 with Retry-After)
  carries the delay; everything else that is not a clean JSON answer (5xx, timeouts, PHP
  output mixed into the body, an `errors` key on a 200) is `PrestaShopUnavailable`.
- Lists accept every empty shape PrestaShop produces (`[]`, `{}`, `{"orders": []}`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from app.core.clock import Clock
from app.handlers._http import retry_after_seconds

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class PrestaShopError(Exception):
    """Base of every error from the shop; `codes` are the Webservice error codes."""

    def __init__(
        self, message: str, *, status: int | None = None, codes: list[int] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes or []


class PrestaShopAuthError(PrestaShopError):
    """The key is missing, malformed, unknown, inactive or lacks the resource."""


class PrestaShopRequestError(PrestaShopError):
    """The shop refused the request itself (bad filter, unknown resource, no route)."""


class PrestaShopNotFound(PrestaShopError):
    """A single object that does not exist (404 with an empty body)."""


class PrestaShopRateLimited(PrestaShopError):
    """A WAF/CDN in front of the shop asked us to slow down."""

    def __init__(self, message: str, *, status: int, retry_after: int) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PrestaShopUnavailable(PrestaShopError):
    """A transient failure: 5xx, timeout, connection error, or a broken body."""


def format_date(value: datetime) -> str:
    return value.strftime(DATE_FORMAT)


class PrestaShopClient:
    """Calls one shop's Webservice with its key; one instance per job run is cheap."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        key: str,
        timeout: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(key, "")
        self._timeout = timeout
        self._clock = clock
        self.ps_version: str | None = None

    def __repr__(self) -> str:
        return f"PrestaShopClient(base_url={self._base!r})"

    async def list(
        self,
        resource: str,
        *,
        display: str = "full",
        filters: Mapping[str, str] | None = None,
        sort: str | None = None,
        date: bool = False,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """One page of `resource`; `limit` uses the `offset,count` form (no brackets)."""
        params: dict[str, str] = {"output_format": "JSON", "display": display}
        for field, value in (filters or {}).items():
            params[f"filter[{field}]"] = value
        if sort:
            params["sort"] = sort
        if date:
            params["date"] = "1"
        if limit is not None:
            params["limit"] = f"{offset},{limit}"
        body = await self._get(resource, params)
        return _list_items(body, resource)

    async def get(self, resource: str, object_id: int, *, full: bool = True) -> dict[str, Any]:
        """One object. With `full`, `display=full` keeps falsy fields that 8.x drops."""
        params = {"output_format": "JSON"}
        if full:
            params["display"] = "full"
        body = await self._get(f"{resource}/{object_id}", params, single=True)
        if isinstance(body, dict):
            # `display` makes even a single object come back in the list shape.
            items = body.get(resource)
            if isinstance(items, list) and items and isinstance(items[0], dict):
                return dict(items[0])
            singular = _singular(resource)
            if isinstance(body.get(singular), dict):
                return dict(body[singular])
        raise PrestaShopNotFound(f"{resource}/{object_id} is not in the answer", status=200)

    async def _get(self, path: str, params: dict[str, str], *, single: bool = False) -> Any:
        url = f"{self._base}/api/{path}"
        try:
            response = await self._http.get(
                url, params=params, auth=self._auth, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise PrestaShopUnavailable(f"GET /api/{path} timed out") from exc
        except httpx.TransportError as exc:
            raise PrestaShopUnavailable(f"GET /api/{path} failed: {type(exc).__name__}") from exc
        version = response.headers.get("psws-version")
        if version:
            self.ps_version = version
        return self._parse(response, path, single=single)

    def _parse(self, response: httpx.Response, path: str, *, single: bool) -> Any:
        status = response.status_code
        where = f"GET /api/{path}"
        body, parsed = _json_body(response)
        codes, messages = _errors(body) if parsed else ([], [])
        # Only the Webservice's own error messages are quoted, briefly; any other body may
        # come from something that is not the shop and is never echoed (it ends in logs
        # and in the job's last_error, which the tenant reads).
        detail = _clip("; ".join(messages), MAX_DETAIL) if messages else _describe(response)
        if status in (401, 403):
            raise PrestaShopAuthError(
                f"{where}: the shop refused the key ({status}: {detail})",
                status=status,
                codes=codes,
            )
        if status == 429 or (status == 503 and "retry-after" in response.headers):
            now = self._clock.now_ms() if self._clock else 0
            delay = retry_after_seconds(response, now_ms=now)
            raise PrestaShopRateLimited(f"{where}: {status}", status=status, retry_after=delay)
        if status == 404 and single and not response.content.strip():
            raise PrestaShopNotFound(f"{where}: not found", status=404)
        if status in (400, 404, 405):
            hint = " (is URL rewriting on for /api/?)" if status == 404 and not codes else ""
            raise PrestaShopRequestError(
                f"{where}: {status} {detail}{hint}", status=status, codes=codes
            )
        if status == 304 or status >= 300 or status < 200:
            raise PrestaShopUnavailable(f"{where}: {status} {detail}", status=status, codes=codes)
        if not parsed:
            raise PrestaShopUnavailable(f"{where}: the body is not JSON ({detail})", status=status)
        if codes or messages:
            # PHP warnings are rendered as errors next to data: the data cannot be trusted.
            raise PrestaShopUnavailable(f"{where}: {detail}", status=status, codes=codes)
        return body


def _json_body(response: httpx.Response) -> tuple[Any, bool]:
    text = response.text
    if not text.strip():
        return None, False
    try:
        return json.loads(text), True
    except ValueError:
        return None, False


def _errors(body: Any) -> tuple[list[int], list[str]]:
    if not isinstance(body, dict) or "errors" not in body:
        return [], []
    codes: list[int] = []
    messages: list[str] = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            code = as_int(error.get("code"))
            if code is not None:
                codes.append(code)
            messages.append(f"[{code}] {_clip(str(error.get('message', '')), 160)}")
    return codes, messages or ["errors"]


MAX_DETAIL = 300


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(response: httpx.Response) -> str:
    """What came back, without its body."""
    if not response.content:
        return "(empty body)"
    kind = response.headers.get("content-type", "no content type").split(";")[0].strip()
    return f"({_clip(kind, 60)} body of {len(response.content)} bytes, not shown)"


def _list_items(body: Any, resource: str) -> list[dict[str, Any]]:
    if isinstance(body, list):
        # `[]` is how PrestaShop renders an empty list (no key at all).
        return [item for item in body if isinstance(item, dict)]
    if isinstance(body, dict):
        items = body.get(resource)
        if items is None:
            return []
        if isinstance(items, list):
            return [item for item in items if isinstance(item, dict)]
    raise PrestaShopUnavailable(f"unexpected list shape for {resource}")


def _singular(resource: str) -> str:
    irregular = {"addresses": "address", "order_histories": "order_history"}
    return irregular.get(resource, resource[:-1] if resource.endswith("s") else resource)


# Lenient value parsing: ints may come as strings (PHP < 8.1) or numbers (PHP >= 8.1).


def as_int(value: Any) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def as_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    return str(value) not in ("0", "false", "False")


def as_datetime(value: Any) -> datetime | None:
    """A shop-local `YYYY-MM-DD HH:MM:SS`; the unset `0000-00-00 ...` is None."""
    if not isinstance(value, str) or not value or value.startswith("0000-00-00"):
        return None
    try:
        return datetime.strptime(value[:19], DATE_FORMAT)
    except ValueError:
        return None


def ml_value(value: Any, language_id: int | None = None) -> str | None:
    """A multilingual field: a plain string, or `[{"id", "value"}]` (first or chosen)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        chosen = None
        for item in value:
            if not isinstance(item, dict):
                continue
            wanted = language_id is not None and as_int(item.get("id")) == language_id
            if chosen is None or wanted:
                chosen = item
        if chosen is not None:
            text = chosen.get("value")
            return None if text is None else str(text)
    return str(value)
