"""row counters: unfinished jobs per tenant, messages per queue, unpublished outbox rows,
kept by triggers and backfilled from the rows; partial indexes of leased
queue messages and unpublished outbox rows

Revision ID: 0013_counters
Revises: 0012_schedule_timezone
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.core.counters import CountedRows, create_ddl, drop_ddl

revision: str = "0013_counters"
down_revision: str | None = "0012_schedule_timezone"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here as they were at this revision (a later change adds its own migration).
COUNTED = [
    CountedRows(
        kind="job_unfinished",
        table="job",
        key="tenant_id",
        condition="{row}.status IN ('accepted', 'queued', 'retrying', 'running')",
        watch=("status",),
    ),
    CountedRows(kind="queue_message", table="queue_message", key="queue", size="size_bytes"),
    CountedRows(
        kind="outbox_pending",
        table="outbox_message",
        key="queue",
        size="size_bytes",
        condition="{row}.published_at IS NULL",
        watch=("published_at",),
    ),
]


def upgrade() -> None:
    op.create_table(
        "row_counter",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("group_key", sa.String(length=63), nullable=False),
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("byte_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "group_key", "shard", name=op.f("pk_row_counter")),
    )
    op.create_index(
        "ix_queue_message_leased",
        "queue_message",
        ["queue", "visible_at_ms"],
        sqlite_where=sa.text("lease_id IS NOT NULL"),
        postgresql_where=sa.text("lease_id IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_message_pending_created",
        "outbox_message",
        ["created_ms"],
        sqlite_where=sa.text("published_at IS NULL"),
        postgresql_where=sa.text("published_at IS NULL"),
    )
    dialect = op.get_bind().dialect.name
    for spec in COUNTED:
        if dialect == "postgresql":  # no write between the backfill and the triggers
            op.execute(f"LOCK TABLE {spec.table} IN SHARE MODE")
        size = "0" if spec.size is None else f"COALESCE(SUM(t.{spec.size}), 0)"
        op.execute(
            "INSERT INTO row_counter (kind, group_key, shard, row_count, byte_count) "
            f"SELECT '{spec.kind}', t.{spec.key}, 0, COUNT(*), {size} FROM {spec.table} AS t "
            f"WHERE {spec.counts('t')} GROUP BY t.{spec.key}"
        )
        for statement in create_ddl(spec, dialect):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for spec in COUNTED:
        for statement in drop_ddl(spec, dialect):
            op.execute(statement)
    op.drop_index("ix_outbox_message_pending_created", table_name="outbox_message")
    op.drop_index("ix_queue_message_leased", table_name="queue_message")
    op.drop_table("row_counter")
