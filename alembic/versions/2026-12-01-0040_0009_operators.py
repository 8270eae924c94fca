"""operators: API keys of the platform operator, which belong to no tenant

Revision ID: 0009_operators
Revises: 0008_scheduler
Create Date: 2026-12-01 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009_operators"
down_revision: str | None = "0008_scheduler"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

String = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "operator_key",
        sa.Column("id", String(length=36), nullable=False),
        sa.Column("prefix", String(length=32), nullable=False),
        sa.Column("key_hash", String(length=64), nullable=False),
        sa.Column("name", String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_key")),
        sa.UniqueConstraint("prefix", name=op.f("uq_operator_key_prefix")),
    )


def downgrade() -> None:
    op.drop_table("operator_key")
