"""emulator: a queue's jurisdiction (eu, us, fedramp), set once at creation; one consumer of
each type per queue (an http_pull one beside a worker one), no longer one in all

Revision ID: 0014_emulator_jurisdiction
Revises: 0013_counters
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_emulator_jurisdiction"
down_revision: str | None = "0013_counters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing queues have none: Cloudflare's default, the global network.
    with op.batch_alter_table("emulator_queue") as batch:
        batch.add_column(sa.Column("jurisdiction", sa.String(length=16), nullable=True))
    with op.batch_alter_table("emulator_consumer") as batch:
        batch.drop_constraint(op.f("uq_emulator_consumer_queue_id"), type_="unique")
        batch.create_unique_constraint(
            op.f("uq_emulator_consumer_queue_id_type"), ["queue_id", "type"]
        )


def downgrade() -> None:
    # Fails if a queue has two consumers: delete one first.
    with op.batch_alter_table("emulator_consumer") as batch:
        batch.drop_constraint(op.f("uq_emulator_consumer_queue_id_type"), type_="unique")
        batch.create_unique_constraint(op.f("uq_emulator_consumer_queue_id"), ["queue_id"])
    with op.batch_alter_table("emulator_queue") as batch:
        batch.drop_column("jurisdiction")
