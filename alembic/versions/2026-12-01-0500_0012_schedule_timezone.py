"""schedules: the IANA time zone their cron expression is read in

Revision ID: 0012_schedule_timezone
Revises: 0011_jobops
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_schedule_timezone"
down_revision: str | None = "0011_jobops"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing schedules keep reading their cron expression in UTC.
    with op.batch_alter_table("schedule") as batch:
        batch.add_column(
            sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC")
        )


def downgrade() -> None:
    with op.batch_alter_table("schedule") as batch:
        batch.drop_column("timezone")
