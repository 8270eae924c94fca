"""Shapes of the webhook ingress: what senders post and what they get back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.core.schemas import JsonDatetime, JsonInt, RequestBody
from app.jobs.payloads import ImageOperation

PrestaShopEventType = Literal[
    "order.created",
    "order.status_changed",
    "product.created",
    "product.updated",
    "product.deleted",
]


MAX_ID_SHOP = 2**63 - 1


def _id_shop_as_text(value: Any) -> Any:
    # PrestaShop's own `id_shop` is a number: taken as the site id it spells (JSON Schema
    # counts 1.0 as the integer 1).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID_SHOP:
        return str(value)
    return value


def _site_id_or_id_shop(schema: dict[str, Any]) -> None:
    text = {key: schema.pop(key) for key in ("type", "minLength", "maxLength")}
    schema["anyOf"] = [text, {"type": "integer", "minimum": 0, "maximum": MAX_ID_SHOP}]


class ShopRef(RequestBody):
    model_config = ConfigDict(extra="allow")

    id: Annotated[str, BeforeValidator(_id_shop_as_text)] = Field(
        min_length=1,
        max_length=64,
        description="The shop's site id, or PrestaShop's numeric id_shop.",
        json_schema_extra=_site_id_or_id_shop,
    )
    url: str | None = Field(default=None, max_length=500)


class EventData(RequestBody):
    """Thin event data: ids and state only; the consumer re-fetches the truth."""

    model_config = ConfigDict(extra="allow")

    id_order: JsonInt[Annotated[int, Field(ge=1)]] | None = None
    id_product: JsonInt[Annotated[int, Field(ge=1)]] | None = None


class PrestaShopEvent(RequestBody):
    """What the jobgate PrestaShop module posts (signed with Standard Webhooks)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "order.created",
                    "shop": {"id": "1", "url": "https://shop.example"},
                    "data": {"id_order": 42, "current_state": 2},
                    "occurred_at": "2026-11-28T13:00:00Z",
                }
            ]
        },
    )

    type: PrestaShopEventType
    shop: ShopRef
    data: EventData
    occurred_at: JsonDatetime


class UnsignedPrestaShopEvent(RequestBody):
    """A `ps_webhooks`-style payload: `{action, entity, data}`, unsigned."""

    model_config = ConfigDict(extra="allow")

    action: Literal["add", "update", "delete"]
    entity: str = Field(min_length=1, max_length=64)
    data: dict[str, Any]


class R2Object(RequestBody):
    model_config = ConfigDict(extra="allow")

    key: str = Field(min_length=1, max_length=1024)
    size: JsonInt[Annotated[int, Field(ge=0)]] | None = None
    eTag: str | None = Field(default=None, max_length=128)


class R2Notification(RequestBody):
    """One Cloudflare R2 event notification body (as R2 writes it to a queue)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
                    "action": "PutObject",
                    "bucket": "product-images",
                    "object": {"key": "products/42/main.jpg", "size": 65536, "eTag": "c846ff"},
                    "eventTime": "2026-11-28T13:00:00.000Z",
                }
            ]
        },
    )

    account: str = Field(max_length=64)
    action: str = Field(min_length=1, max_length=64)
    bucket: str = Field(min_length=1, max_length=63)
    object: R2Object
    eventTime: JsonDatetime


class R2NotificationBatch(RequestBody):
    """Up to 100 notifications at once (what a queue consumer Worker forwards)."""

    messages: list[R2Notification] = Field(min_length=1, max_length=100)


class PrestaShopPing(RequestBody):
    """The module's connection test: signed like an event, but it makes no job."""

    model_config = ConfigDict(extra="allow")

    shop: ShopRef


class WebhookPing(BaseModel):
    """A valid signature; `site_id` is the shop connection events would sync (null: none)."""

    tenant_id: str
    site_id: str | None


class WebhookAccepted(BaseModel):
    """The jobs the event made (or, for a replay, made the first time)."""

    jobs: list[str]
    replay: bool = Field(default=False, description="True when this delivery was seen before.")


class R2Accepted(WebhookAccepted):
    """What an R2 delivery made, and why the notifications that made no job made none."""

    ignored: int = Field(
        default=0, description="Notifications that made no job (no rule matched, not a create)."
    )
    unmatched: list[str] | None = Field(
        default=None,
        description="`bucket/key` of each notification no R2 rule matches (absent if none).",
    )
    hint: str | None = Field(
        default=None,
        description="Set when notifications made no job: what to check (absent otherwise).",
    )


class R2RuleCreate(RequestBody):
    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(min_length=1, max_length=63)
    prefix: str = Field(default="", max_length=1024)
    operations: list[ImageOperation] = Field(min_length=1, max_length=20)


class R2RulePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    bucket: str
    prefix: str
    operations: list[dict[str, Any]]
    created_at: datetime


class UnsignedTokenCreated(BaseModel):
    """The URL token of the unsigned route, shown only once."""

    token: str
    path: str
