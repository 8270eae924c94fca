"""email policy per tenant; cron fires refused by admission wait in schedule.retry_at

Revision ID: 0010_email_policy
Revises: 0009_operators
Create Date: 2026-12-01 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_email_policy"
down_revision: str | None = "0009_operators"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
String = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "email_policy",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("allow_any", sa.Boolean(), nullable=False),
        sa.Column("domains", JSON, nullable=False),
        sa.Column("rate", String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_email_policy_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_email_policy")),
    )
    with op.batch_alter_table("schedule") as batch:
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedule") as batch:
        batch.drop_column("retry_at")
    op.drop_table("email_policy")
