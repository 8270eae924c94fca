"""consumer attempts and circuit breakers

Revision ID: 0003_consumer
Revises: 0002_emulator
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_consumer"
down_revision: str | None = "0002_emulator"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_attempt",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=63), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("final_delivery", sa.Boolean(), nullable=False),
        sa.Column("lease_expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("retry_delay_seconds", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_attempt_job_id_job"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_attempt")),
        sa.UniqueConstraint("job_id", "attempt", name=op.f("uq_job_attempt_job_id_attempt")),
    )
    with op.batch_alter_table("job_attempt", schema=None) as batch_op:
        batch_op.create_index(
            "ix_job_attempt_ended_at_lease_expires_ms",
            ["ended_at", "lease_expires_ms"],
            unique=False,
        )
    op.create_table(
        "circuit_breaker",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("job_type", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_ms", sa.BigInteger(), nullable=True),
        sa.Column("opened_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("trial_started_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_circuit_breaker_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "job_type", name=op.f("pk_circuit_breaker")),
    )


def downgrade() -> None:
    op.drop_table("circuit_breaker")
    with op.batch_alter_table("job_attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_job_attempt_ended_at_lease_expires_ms")
    op.drop_table("job_attempt")
