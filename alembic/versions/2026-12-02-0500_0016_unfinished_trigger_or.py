"""job_unfinished counter triggers: the unfinished-status test as an OR chain

Revision ID: 0016_unfinished_trigger_or
Revises: 0015_queue_notify
Create Date: 2026-12-02 05:00:00

On SQLite, a trigger whose WHEN holds `status IN ('accepted', ...)` builds the IN list's
lookup table each time it fires: a job leaving `running` cost about 100 us more per row in
the consumer's settle, and each job insert about 15 us more. The same test written as
`status = 'accepted' OR ...` costs next to nothing. The triggers are re-created with it on
both databases (PostgreSQL's were not slow; one form keeps `jobgate db recount` and the
triggers alike). The counts are unchanged: nothing is backfilled.
"""

from collections.abc import Sequence

from alembic import op

from app.core.counters import CountedRows, create_ddl, drop_ddl

revision: str = "0016_unfinished_trigger_or"
down_revision: str | None = "0015_queue_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = ("accepted", "queued", "retrying", "running")

# Frozen here as they are at this revision.
BEFORE = CountedRows(
    kind="job_unfinished",
    table="job",
    key="tenant_id",
    condition="{row}.status IN (" + ", ".join(f"'{s}'" for s in _UNFINISHED) + ")",
    watch=("status",),
)
AFTER = CountedRows(
    kind="job_unfinished",
    table="job",
    key="tenant_id",
    condition=" OR ".join(f"{{row}}.status = '{s}'" for s in _UNFINISHED),
    watch=("status",),
)


def _replace(spec: CountedRows, dialect: str) -> None:
    for statement in drop_ddl(spec, dialect):
        op.execute(statement)
    for statement in create_ddl(spec, dialect):
        op.execute(statement)


def upgrade() -> None:
    _replace(AFTER, op.get_bind().dialect.name)


def downgrade() -> None:
    _replace(BEFORE, op.get_bind().dialect.name)
