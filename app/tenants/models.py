"""Tenants and their credentials. Secrets are stored hashed (API keys) or encrypted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, String
from sqlmodel import Field, SQLModel

from app.core.db import UTCDateTime


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"

    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=200, unique=True)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(
        sa_column=Column(String(36), ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False)
    )
    # The visible part of the key (`jg_ab12cd34`), unique, used to find the row.
    prefix: str = Field(max_length=32, unique=True)
    # SHA-256 of the whole key: the key itself is never stored.
    key_hash: str = Field(max_length=64)
    scopes: str = Field(max_length=200)
    name: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class WebhookSecret(SQLModel, table=True):
    __tablename__ = "webhook_secret"

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    # Fernet ciphertext: HMAC verification needs the secret itself, so it cannot be hashed.
    secret_encrypted: str = Field(max_length=500)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class OperatorKey(SQLModel, table=True):
    """A key of the platform operator: it belongs to no tenant and may act on every tenant.

    A table of its own (not an `api_key` row without a tenant), so no tenant-scoped query or
    route can ever list, create or revoke one; only `jobgate operators` does.
    """

    __tablename__ = "operator_key"

    id: str = Field(primary_key=True, max_length=36)
    # The visible part of the key (`jgo_ab12cd34`), unique, used to find the row.
    prefix: str = Field(max_length=32, unique=True)
    # SHA-256 of the whole key: the key itself is never stored.
    key_hash: str = Field(max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
