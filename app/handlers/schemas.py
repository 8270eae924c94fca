"""API shapes of the handlers domain: a tenant's PrestaShop connections."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import RequestBody


class ShopConnectionSet(RequestBody):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(max_length=500, examples=["https://shop.example"])
    webservice_key: str = Field(min_length=1, max_length=64, description="Stored encrypted.")
    timezone: str = Field(default="UTC", max_length=64)
    make_default: bool = False


class ShopConnectionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    site_id: str
    base_url: str
    timezone: str
    is_default: bool
    ps_version: str | None
    created_at: datetime
    updated_at: datetime


class ShopConnectionList(BaseModel):
    data: list[ShopConnectionPublic]
