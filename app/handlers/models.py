"""Tables the company's handlers write, every row scoped by `tenant_id`.

Shop dates (`date_add`, `date_upd`) are PrestaShop's own values: shop-local wall time
without a zone, kept naive on purpose so they compare exactly with what the shop filters on.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from app.core.db import JSONType, UTCDateTime


def _tenant_fk(*, primary_key: bool = False, index: bool = False) -> Any:
    return Field(
        sa_column=Column(
            String(36),
            ForeignKey("tenant.id", ondelete="CASCADE"),
            nullable=False,
            primary_key=primary_key,
            index=index,
        )
    )


class ShopConnection(SQLModel, table=True):
    """A tenant's PrestaShop shop: where it is and its Webservice key (encrypted)."""

    __tablename__ = "shop_connection"
    __table_args__ = (UniqueConstraint("tenant_id", "site_id"),)

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = _tenant_fk()
    site_id: str = Field(max_length=64)
    # Jobs without a siteId use the tenant's default shop.
    is_default: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    base_url: str = Field(max_length=500)
    # Fernet ciphertext (SecretBox): the key is sent to the shop, so it cannot be hashed.
    key_encrypted: str = Field(max_length=500)
    # The shop's time zone: date filters are in shop-local time.
    timezone: str = Field(default="UTC", max_length=64)
    # PSWS-Version seen on the last successful call.
    ps_version: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class EmailSender(SQLModel, table=True):
    """A tenant's From address for `send-email` (the settings' default otherwise)."""

    __tablename__ = "email_sender"

    tenant_id: str = _tenant_fk(primary_key=True)
    address: str = Field(max_length=320)
    display_name: str | None = Field(default=None, max_length=200)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class PsOrder(SQLModel, table=True):
    """One PrestaShop order, upserted by (tenant, site, order id)."""

    __tablename__ = "ps_order"

    tenant_id: str = _tenant_fk(primary_key=True)
    site_id: str = Field(primary_key=True, max_length=64)
    order_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    reference: str | None = Field(default=None, max_length=32)
    current_state: int | None = None
    id_customer: int | None = Field(default=None, sa_column=Column(BigInteger))
    id_currency: int | None = None
    payment: str | None = Field(default=None, max_length=255)
    total_paid: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 6)))
    date_add: datetime | None = Field(default=None, sa_column=Column(DateTime()))
    date_upd: datetime | None = Field(default=None, sa_column=Column(DateTime(), index=True))
    # The shop's object as served (minus `secure_key`), order rows included.
    data: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    synced_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class PsProduct(SQLModel, table=True):
    """One PrestaShop product, upserted by (tenant, site, product id)."""

    __tablename__ = "ps_product"

    tenant_id: str = _tenant_fk(primary_key=True)
    site_id: str = Field(primary_key=True, max_length=64)
    product_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    reference: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, sa_column=Column(Text))
    price: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 6)))
    active: bool | None = Field(default=None, sa_column=Column(Boolean))
    id_supplier: int | None = None
    id_manufacturer: int | None = None
    date_upd: datetime | None = Field(default=None, sa_column=Column(DateTime(), index=True))
    # Supplier links (`product_suppliers`) when the job asked to link vendors.
    suppliers: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSONType))
    data: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    synced_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class PsSyncState(SQLModel, table=True):
    """Per shop and resource: the newest `date_upd` synced (the incremental watermark)."""

    __tablename__ = "ps_sync_state"

    tenant_id: str = _tenant_fk(primary_key=True)
    site_id: str = Field(primary_key=True, max_length=64)
    resource: str = Field(primary_key=True, max_length=32)
    watermark: datetime | None = Field(default=None, sa_column=Column(DateTime()))
    last_job_id: str | None = Field(default=None, max_length=36)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class AnalyticsEvent(SQLModel, table=True):
    """One analytics event; `job_id` is unique so a redelivered job inserts nothing."""

    __tablename__ = "analytics_event"

    # SQLite only auto-increments a plain INTEGER primary key.
    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    tenant_id: str = _tenant_fk(index=True)
    job_id: str = Field(max_length=36, unique=True)
    name: str = Field(max_length=200)
    properties: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    recorded_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ImageResult(SQLModel, table=True):
    """What `process-image` made of one object: thumbnails, alt text, or why not."""

    __tablename__ = "image_result"

    tenant_id: str = _tenant_fk(primary_key=True)
    object_key: str = Field(primary_key=True, max_length=1024)
    # processed | missing | invalid
    status: str = Field(max_length=16)
    thumbnails: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    alt_text: str | None = Field(default=None, sa_column=Column(Text))
    detail: str | None = Field(default=None, sa_column=Column(Text))
    job_id: str = Field(max_length=36)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class EmailDelivery(SQLModel, table=True):
    """One `send-email` job's outcome; a `sent` row makes a redelivery a no-op."""

    __tablename__ = "email_delivery"

    job_id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = _tenant_fk(index=True)
    recipient: str = Field(max_length=320)
    template_id: str = Field(max_length=100)
    message_id: str = Field(max_length=255)
    # sent | failed
    status: str = Field(max_length=16)
    detail: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
