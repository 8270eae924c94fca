"""Shapes of the webhook ingress: what senders post and what they get back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.payloads import ImageOperation

PrestaShopEventType = Literal[
    "order.created",
    "order.status_changed",
    "product.created",
    "product.updated",
    "product.deleted",
]


class ShopRef(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    id: str = Field(min_length=1, max_length=64, description="The shop's site id (or id_shop).")
    url: str | None = Field(default=None, max_length=500)


class EventData(BaseModel):
    """Thin event data: ids and state only; the consumer re-fetches the truth."""

    model_config = ConfigDict(extra="allow")

    id_order: int | None = Field(default=None, ge=1)
    id_product: int | None = Field(default=None, ge=1)


class PrestaShopEvent(BaseModel):
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
    occurred_at: datetime


class UnsignedPrestaShopEvent(BaseModel):
    """A `ps_webhooks`-style payload: `{action, entity, data}`, unsigned."""

    model_config = ConfigDict(extra="allow")

    action: Literal["add", "update", "delete"]
    entity: str = Field(min_length=1, max_length=64)
    data: dict[str, Any]


class R2Object(BaseModel):
    model_config = ConfigDict(extra="allow")

    key: str = Field(min_length=1, max_length=1024)
    size: int | None = Field(default=None, ge=0)
    eTag: str | None = Field(default=None, max_length=128)


class R2Notification(BaseModel):
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
    eventTime: datetime


class R2NotificationBatch(BaseModel):
    """Up to 100 notifications at once (what a queue consumer Worker forwards)."""

    messages: list[R2Notification] = Field(min_length=1, max_length=100)


class PrestaShopPing(BaseModel):
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


class R2RuleCreate(BaseModel):
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
