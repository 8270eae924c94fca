"""handler data tables

Revision ID: 0004_handlers
Revises: 0003_consumer
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

revision: str = "0004_handlers"
down_revision: str | None = "0003_consumer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
