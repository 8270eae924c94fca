"""emulator queues and consumers

Revision ID: 0002_emulator
Revises: 0001_job_store
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

revision: str = "0002_emulator"
down_revision: str | None = "0001_job_store"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
