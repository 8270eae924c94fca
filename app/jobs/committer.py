"""Group commit: concurrent submissions share one transaction.

A submission without idempotency keys is only inserts, so the writes of every submission
that arrives while a transaction is in flight are merged and written by the next one, with
one statement per table. Each caller resumes only after the transaction holding its rows
has committed, so a 202 still means "stored durably".

Submissions of different tenants share a group, so one bad submission must not fail the
others: when a group's transaction fails for anything but an unreachable database, each
member is written again in a transaction of its own, and only the members whose own
transaction fails get an error (their own). When the database is unreachable every member
gets the failure at once (503), without a retry storm against it.

At low load a group holds one submission and adds no wait; under load the cost of a
commit (an fsync on SQLite FULL, a WAL flush on PostgreSQL) is paid once per group. On
SQLite the committer is also the only writer of the hot path, which removes lock
contention between requests. The composition root hands in the database's raw writer:
`SqliteGroupWriter` (the stdlib driver in a process of its own) or `PostgresGroupWriter`
(one asyncpg statement per group); without one, the rows go through an ORM session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import SessionMaker
from app.core.errors import database_problem, describe_database_error, is_transient_conflict
from app.jobs.dispatchers import Dispatcher
from app.jobs.service import PendingWrites, write_pending
from app.jobs.sqlite_writer import RecordedInserts

logger = logging.getLogger(__name__)

# A transaction PostgreSQL rolled back for a deadlock or serialization failure is run again
# this many times, after 5, 10, 20 ms.
TRANSIENT_RETRIES = 3
TRANSIENT_BACKOFF_S = 0.005
# Rows per group: bounded so one transaction stays short.
MAX_GROUP_JOBS = 1000


class GroupWriter(Protocol):
    """Stores a group's bulk inserts (table, rows) in one transaction of its own."""

    async def write(self, batches: list[tuple[Table, list[dict[str, Any]]]]) -> None: ...

    async def close(self) -> None: ...


class GroupCommitter:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        dispatcher: Dispatcher,
        *,
        max_jobs: int = MAX_GROUP_JOBS,
        writer: GroupWriter | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._writer = writer
        self._dispatcher = dispatcher
        self._max_jobs = max_jobs
        self._pending: list[tuple[PendingWrites, asyncio.Future[None]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.groups = 0
        self.submissions = 0
        self.isolations = 0  # failed groups retried member by member

    async def write(self, writes: PendingWrites) -> None:
        """Return once `writes` are committed (raises what the transaction raised)."""
        if not writes.jobs:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((writes, future))
        if self._task is None or self._task.done() or self._wakeup is None:
            # Started lazily, in the loop of its first caller.
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._wakeup), name="group-committer")
        self._wakeup.set()
        await future

    def _take_group(self) -> list[tuple[PendingWrites, asyncio.Future[None]]]:
        group: list[tuple[PendingWrites, asyncio.Future[None]]] = []
        jobs = 0
        while self._pending and (
            not group or jobs + len(self._pending[0][0].jobs) <= self._max_jobs
        ):
            item = self._pending.pop(0)
            group.append(item)
            jobs += len(item[0].jobs)
        return group

    async def _run(self, wakeup: asyncio.Event) -> None:
        while True:
            await wakeup.wait()
            wakeup.clear()
            while self._pending:
                group = self._take_group()
                merged = PendingWrites()
                for writes, _ in group:
                    merged.extend(writes)
                try:
                    await self._commit(merged)
                except Exception as exc:
                    logger.warning(
                        "a group of %d submissions failed: %s",
                        len(group),
                        describe_database_error(exc),
                    )
                    if len(group) == 1 or _is_unavailable(exc):
                        for _, future in group:
                            _settle(future, exc)
                        continue
                    await self._isolate(group)
                    continue
                self.groups += 1
                self.submissions += len(group)
                for _, future in group:
                    _settle(future, None)

    async def _commit(self, writes: PendingWrites) -> None:
        """Write in one transaction; a deadlock or serialization failure (PostgreSQL rolled
        the whole transaction back, e.g. two writers meeting on counter rows) is retried."""
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                await self._commit_once(writes)
                return
            except Exception as exc:
                if attempt == TRANSIENT_RETRIES or not is_transient_conflict(exc):
                    raise
                logger.info("group transaction retried: %s", describe_database_error(exc))
                await asyncio.sleep(TRANSIENT_BACKOFF_S * 2**attempt)

    async def _commit_once(self, writes: PendingWrites) -> None:
        if self._writer is not None:
            # The dispatcher builds its rows as for a session; the writer stores them all.
            recorded = RecordedInserts()
            await write_pending(cast(AsyncSession, recorded), writes, self._dispatcher)
            await self._writer.write(recorded.batches)
            return
        async with self._sessionmaker() as session:
            await write_pending(session, writes, self._dispatcher)
            await session.commit()

    async def _isolate(self, group: list[tuple[PendingWrites, asyncio.Future[None]]]) -> None:
        """Write each member of a failed group alone: only the faulty ones fail."""
        self.isolations += 1
        for writes, future in group:
            if future.done():  # its caller went away: nothing to write for it
                continue
            try:
                await self._commit(writes)
            except Exception as exc:
                _settle(future, exc)
                continue
            self.groups += 1
            self.submissions += 1
            _settle(future, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()
        if self._writer is not None:
            await self._writer.close()


def _is_unavailable(exc: Exception) -> bool:
    problem = database_problem(exc)
    return problem is not None and problem.status == 503


def _settle(future: asyncio.Future[None], exc: Exception | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
