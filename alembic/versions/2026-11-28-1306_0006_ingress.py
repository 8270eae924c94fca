"""webhook ingress, JWT and admin

Revision ID: 0006_ingress
Revises: 0005_outbox
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_ingress"
down_revision: str | None = "0005_outbox"
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
        "webhook_event",
        sa.Column("id", String(length=36), nullable=False),
        sa.Column("source", String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("external_id", String(length=255), nullable=False),
        sa.Column("event_type", String(length=64), nullable=False),
        sa.Column("job_ids", JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("webhook_event"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_event")),
        sa.UniqueConstraint(
            "source",
            "tenant_id",
            "external_id",
            name=op.f("uq_webhook_event_source_tenant_id_external_id"),
        ),
    )
    op.create_table(
        "r2_rule",
        sa.Column("id", String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("bucket", String(length=63), nullable=False),
        sa.Column("prefix", String(length=1024), nullable=False),
        sa.Column("operations", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("r2_rule"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_r2_rule")),
        sa.UniqueConstraint(
            "tenant_id", "bucket", "prefix", name=op.f("uq_r2_rule_tenant_id_bucket_prefix")
        ),
    )
    op.create_index(op.f("ix_r2_rule_tenant_id"), "r2_rule", ["tenant_id"], unique=False)
    op.create_table(
        "unsigned_webhook_token",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk("unsigned_webhook_token"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_unsigned_webhook_token")),
    )


def downgrade() -> None:
    op.drop_table("unsigned_webhook_token")
    op.drop_index(op.f("ix_r2_rule_tenant_id"), table_name="r2_rule")
    op.drop_table("r2_rule")
    op.drop_table("webhook_event")
