"""paused queues in queue_pause, shared by the local engine and the emulator

Revision ID: 0011_queue_controls
Revises: 0010_email_policy
Create Date: 2026-12-01 04:00:00

The emulator's `emulator_queue.delivery_paused` moves to `queue_pause` (keyed by queue id
there), so pausing through the emulator or the engine is one state.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011_queue_controls"
down_revision: str | None = "0010_email_policy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_pause",
        sa.Column("queue", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("paused_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("queue", name=op.f("pk_queue_pause")),
    )
    op.execute(
        "INSERT INTO queue_pause (queue, paused_ms) "
        "SELECT id, 0 FROM emulator_queue WHERE delivery_paused"
    )
    with op.batch_alter_table("emulator_queue") as batch:
        batch.drop_column("delivery_paused")


def downgrade() -> None:
    with op.batch_alter_table("emulator_queue") as batch:
        batch.add_column(
            sa.Column(
                "delivery_paused", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    op.execute(
        "UPDATE emulator_queue SET delivery_paused = TRUE "
        "WHERE id IN (SELECT queue FROM queue_pause)"
    )
    op.drop_table("queue_pause")
