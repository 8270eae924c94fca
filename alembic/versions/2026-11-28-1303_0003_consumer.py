"""consumer attempts and circuit breakers

Revision ID: 0003_consumer
Revises: 0002_emulator
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

revision: str = "0003_consumer"
down_revision: str | None = "0002_emulator"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
