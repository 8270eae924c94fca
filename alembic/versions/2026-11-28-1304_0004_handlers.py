"""handler data tables

Revision ID: 0004_handlers
Revises: 0003_consumer
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_handlers"
down_revision: str | None = "0003_consumer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
String = sqlmodel.sql.sqltypes.AutoString


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenant.id"], name=op.f(f"fk_{table}_tenant_id_tenant"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "shop_connection",
        sa.Column("id", String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("site_id", String(length=64), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("base_url", String(length=500), nullable=False),
        sa.Column("key_encrypted", String(length=500), nullable=False),
        sa.Column("timezone", String(length=64), nullable=False),
        sa.Column("ps_version", String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("shop_connection"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_connection")),
        sa.UniqueConstraint(
            "tenant_id", "site_id", name=op.f("uq_shop_connection_tenant_id_site_id")
        ),
    )
    op.create_table(
        "email_sender",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("address", String(length=320), nullable=False),
        sa.Column("display_name", String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("email_sender"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_email_sender")),
    )
    op.create_table(
        "ps_order",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("site_id", String(length=64), nullable=False),
        sa.Column("order_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reference", String(length=32), nullable=True),
        sa.Column("current_state", sa.Integer(), nullable=True),
        sa.Column("id_customer", sa.BigInteger(), nullable=True),
        sa.Column("id_currency", sa.Integer(), nullable=True),
        sa.Column("payment", String(length=255), nullable=True),
        sa.Column("total_paid", sa.Numeric(20, 6), nullable=True),
        sa.Column("date_add", sa.DateTime(), nullable=True),
        sa.Column("date_upd", sa.DateTime(), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("ps_order"),
        sa.PrimaryKeyConstraint("tenant_id", "site_id", "order_id", name=op.f("pk_ps_order")),
    )
    op.create_index(op.f("ix_ps_order_date_upd"), "ps_order", ["date_upd"], unique=False)
    op.create_table(
        "ps_product",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("site_id", String(length=64), nullable=False),
        sa.Column("product_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reference", String(length=64), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("price", sa.Numeric(20, 6), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("id_supplier", sa.Integer(), nullable=True),
        sa.Column("id_manufacturer", sa.Integer(), nullable=True),
        sa.Column("date_upd", sa.DateTime(), nullable=True),
        sa.Column("suppliers", JSON, nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("ps_product"),
        sa.PrimaryKeyConstraint("tenant_id", "site_id", "product_id", name=op.f("pk_ps_product")),
    )
    op.create_index(op.f("ix_ps_product_date_upd"), "ps_product", ["date_upd"], unique=False)
    op.create_table(
        "ps_sync_state",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("site_id", String(length=64), nullable=False),
        sa.Column("resource", String(length=32), nullable=False),
        sa.Column("watermark", sa.DateTime(), nullable=True),
        sa.Column("last_job_id", String(length=36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("ps_sync_state"),
        sa.PrimaryKeyConstraint("tenant_id", "site_id", "resource", name=op.f("pk_ps_sync_state")),
    )
    op.create_table(
        "analytics_event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", String(length=36), nullable=False),
        sa.Column("name", String(length=200), nullable=False),
        sa.Column("properties", JSON, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("analytics_event"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_event")),
        sa.UniqueConstraint("job_id", name=op.f("uq_analytics_event_job_id")),
    )
    op.create_index(
        op.f("ix_analytics_event_tenant_id"), "analytics_event", ["tenant_id"], unique=False
    )
    op.create_table(
        "image_result",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("object_key", String(length=1024), nullable=False),
        sa.Column("status", String(length=16), nullable=False),
        sa.Column("thumbnails", JSON, nullable=False),
        sa.Column("alt_text", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("job_id", String(length=36), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("image_result"),
        sa.PrimaryKeyConstraint("tenant_id", "object_key", name=op.f("pk_image_result")),
    )
    op.create_table(
        "email_delivery",
        sa.Column("job_id", String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("recipient", String(length=320), nullable=False),
        sa.Column("template_id", String(length=100), nullable=False),
        sa.Column("message_id", String(length=255), nullable=False),
        sa.Column("status", String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("email_delivery"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_email_delivery")),
    )
    op.create_index(
        op.f("ix_email_delivery_tenant_id"), "email_delivery", ["tenant_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_email_delivery_tenant_id"), table_name="email_delivery")
    op.drop_table("email_delivery")
    op.drop_table("image_result")
    op.drop_index(op.f("ix_analytics_event_tenant_id"), table_name="analytics_event")
    op.drop_table("analytics_event")
    op.drop_table("ps_sync_state")
    op.drop_index(op.f("ix_ps_product_date_upd"), table_name="ps_product")
    op.drop_table("ps_product")
    op.drop_index(op.f("ix_ps_order_date_upd"), table_name="ps_order")
    op.drop_table("ps_order")
    op.drop_table("email_sender")
    op.drop_table("shop_connection")
