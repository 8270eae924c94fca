"""emulator queues and consumers

Revision ID: 0002_emulator
Revises: 0001_job_store
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_emulator"
down_revision: str | None = "0001_job_store"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "emulator_queue",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("delivery_delay", sa.Integer(), nullable=False),
        sa.Column("message_retention_period", sa.Integer(), nullable=False),
        sa.Column("delivery_paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purge_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emulator_queue")),
        sa.UniqueConstraint("name", name=op.f("uq_emulator_queue_name")),
    )
    op.create_table(
        "emulator_consumer",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("queue_id", sa.String(length=32), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("script_name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("dead_letter_queue", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True),
        sa.Column(
            "settings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["emulator_queue.id"],
            name=op.f("fk_emulator_consumer_queue_id_emulator_queue"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emulator_consumer")),
        sa.UniqueConstraint("queue_id", name=op.f("uq_emulator_consumer_queue_id")),
    )


def downgrade() -> None:
    op.drop_table("emulator_consumer")
    op.drop_table("emulator_queue")
