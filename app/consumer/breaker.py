"""Circuit breaker per (tenant, job type), kept in the job store.

Closed: work runs. After `threshold` consecutive failures within `window` it opens: work of
that pair is deferred (re-delayed, never dropped) until `cooldown` has passed. Then it is
half-open: one trial runs; success closes it, failure opens it again. A trial that never
reports back (its consumer died) is replaced after another cool-down. The state lives in the
`circuit_breaker` table so every consumer shares it and the gateway can show it.

Functions take the caller's session and never commit (the consumer commits).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.consumer.models import CircuitBreaker
from app.core.clock import to_datetime
from app.core.db import table_of

BreakerKey = tuple[str, str]  # (tenant_id, job_type)
_table = table_of(CircuitBreaker)


class BreakerState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    threshold: int = 5
    window_ms: int = 60_000
    cooldown_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    # When not allowed: seconds until the breaker may let work through again.
    retry_in_seconds: int = 0


def _seconds_until(deadline_ms: int, now_ms: int) -> int:
    return max(1, -(-(deadline_ms - now_ms) // 1000))


class Breakers:
    """The breakers of one batch: loaded once, decided in memory, written back on flush."""

    def __init__(self, session: AsyncSession, policy: BreakerPolicy) -> None:
        self._session = session
        self._policy = policy
        self._rows: dict[BreakerKey, CircuitBreaker] = {}
        # Rows first created by this batch: upserted, since another consumer may race us.
        self._new: set[BreakerKey] = set()

    async def load(self, keys: Iterable[BreakerKey]) -> None:
        wanted = sorted(set(keys) - set(self._rows))
        if not wanted:
            return
        stmt = select(CircuitBreaker).where(
            tuple_(col(CircuitBreaker.tenant_id), col(CircuitBreaker.job_type)).in_(wanted)
        )
        for row in (await self._session.execute(stmt)).scalars().all():
            self._rows[(row.tenant_id, row.job_type)] = row

    def admit(self, key: BreakerKey, now_ms: int) -> Admission:
        """May one more job of `key` run now? A half-open breaker admits one trial."""
        row = self._rows.get(key)
        if row is None or row.state == BreakerState.closed:
            return Admission(allowed=True)
        cooldown = self._policy.cooldown_ms
        if row.state == BreakerState.open:
            reopen_ms = (row.opened_at_ms or now_ms) + cooldown
            if now_ms < reopen_ms:
                return Admission(allowed=False, retry_in_seconds=_seconds_until(reopen_ms, now_ms))
            self._trial(row, now_ms)
            return Admission(allowed=True)
        # Half-open: one trial at a time; replace a trial that never reported back.
        trial_deadline = (row.trial_started_ms or now_ms) + cooldown
        if now_ms >= trial_deadline:
            self._trial(row, now_ms)
            return Admission(allowed=True)
        return Admission(allowed=False, retry_in_seconds=_seconds_until(trial_deadline, now_ms))

    def _trial(self, row: CircuitBreaker, now_ms: int) -> None:
        row.state = BreakerState.half_open
        row.trial_started_ms = now_ms
        row.updated_at = to_datetime(now_ms)

    def success(self, key: BreakerKey, now_ms: int) -> None:
        row = self._rows.get(key)
        if row is None or (row.state == BreakerState.closed and row.failures == 0):
            return
        row.state = BreakerState.closed
        row.failures = 0
        row.window_started_ms = row.opened_at_ms = row.trial_started_ms = None
        row.updated_at = to_datetime(now_ms)

    def failure(self, key: BreakerKey, now_ms: int, error: str | None = None) -> None:
        row = self._rows.get(key)
        if row is None:
            row = CircuitBreaker(
                tenant_id=key[0],
                job_type=key[1],
                state=BreakerState.closed,
                failures=0,
                updated_at=to_datetime(now_ms),
            )
            self._rows[key] = row
            self._new.add(key)
        row.last_error = error[:2000] if error else None
        row.updated_at = to_datetime(now_ms)
        if row.state == BreakerState.half_open:
            # The trial failed: open again for a full cool-down.
            row.state = BreakerState.open
            row.opened_at_ms = now_ms
            row.trial_started_ms = None
            return
        if row.state == BreakerState.open:
            return  # a job admitted before it opened; the cool-down keeps running
        window_start = row.window_started_ms
        if window_start is None or now_ms - window_start > self._policy.window_ms:
            row.failures = 1
            row.window_started_ms = now_ms
        else:
            row.failures += 1
        if row.failures >= self._policy.threshold:
            row.state = BreakerState.open
            row.opened_at_ms = now_ms

    async def flush(self) -> None:
        """Write changed rows back: new rows in one upsert, changed ones by the session."""
        if self._new:
            rows = [
                {c.name: getattr(self._rows[key], c.name) for c in _table.columns}
                for key in sorted(self._new)
            ]
            dialect = self._session.get_bind().dialect.name
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            stmt = insert(_table)
            update = {
                c.name: stmt.excluded[c.name]
                for c in _table.columns
                if c.name not in ("tenant_id", "job_type")
            }
            await self._session.execute(
                stmt.on_conflict_do_update(index_elements=["tenant_id", "job_type"], set_=update),
                rows,
            )
            self._new.clear()
        await self._session.flush()


async def list_breakers(session: AsyncSession, *, tenant_id: str) -> Sequence[CircuitBreaker]:
    """The tenant's breakers that are not plainly closed (for the gateway and dashboard)."""
    stmt = (
        select(CircuitBreaker)
        .where(CircuitBreaker.tenant_id == tenant_id)
        .order_by(col(CircuitBreaker.job_type))
    )
    return (await session.execute(stmt)).scalars().all()


async def is_open(
    session: AsyncSession, *, tenant_id: str, job_type: str, now_ms: int, policy: BreakerPolicy
) -> bool:
    """True while new work of (tenant, type) would be deferred (for refusing at ingress)."""
    row = await session.get(CircuitBreaker, (tenant_id, job_type))
    if row is None or row.state != BreakerState.open:
        return False
    return now_ms < (row.opened_at_ms or 0) + policy.cooldown_ms


async def open_breakers(session: AsyncSession) -> dict[BreakerKey, int]:
    """Every open breaker: (tenant, job type) -> when it opened (ms), one query."""
    stmt = select(_table.c.tenant_id, _table.c.job_type, _table.c.opened_at_ms).where(
        _table.c.state == BreakerState.open.value
    )
    rows = (await session.execute(stmt)).all()
    return {(str(t), str(j)): int(at or 0) for t, j, at in rows}
