"""Unfinished jobs per tenant, read from trigger-kept counters (`app.core.counters`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import counters
from app.core.counters import CountedRows
from app.jobs.models import FINISHED_STATUSES, JobStatus

# Written as an OR chain, not `status IN (...)`: in a SQLite trigger an IN list is built into
# a lookup table on every firing, which made each job update cost about 100 us more.
_UNFINISHED = " OR ".join(
    f"{{row}}.status = '{status.value}'"
    for status in sorted(JobStatus)
    if status not in FINISHED_STATUSES
)

UNFINISHED_JOBS = CountedRows(
    kind="job_unfinished",
    table="job",
    key="tenant_id",
    condition=_UNFINISHED,
    watch=("status",),
)


async def count_unfinished(session: AsyncSession, tenant_id: str) -> int:
    """The tenant's jobs not finished yet: a read of its counter rows, not of its jobs."""
    found = await counters.totals(session, UNFINISHED_JOBS.kind, [tenant_id])
    return found.get(tenant_id, (0, 0))[0]
