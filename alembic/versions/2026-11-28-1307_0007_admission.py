"""admission control: per-tenant plans

Revision ID: 0007_admission
Revises: 0006_ingress
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_admission"
down_revision: str | None = "0006_ingress"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_plan",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("plan", sa.String(length=64), nullable=False),
        sa.Column("rate_limit_jobs", sa.String(length=64), nullable=True),
        sa.Column("rate_limit_batch", sa.String(length=64), nullable=True),
        sa.Column("rate_limit_reads", sa.String(length=64), nullable=True),
        sa.Column("rate_limit_webhooks", sa.String(length=64), nullable=True),
        sa.Column("max_in_flight", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_tenant_plan_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_plan")),
    )


def downgrade() -> None:
    op.drop_table("tenant_plan")
