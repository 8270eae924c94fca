"""Counting the SQL statements an engine sends, for tests that bound database work."""

from __future__ import annotations

import asyncio
import contextvars
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime
from app.core.clock import to_datetime
from app.jobs.payloads import JobOptions
from app.jobs.service import PendingWrites, _build, _prepare, write_pending
from app.tenants.schemas import Principal

# Set inside `count_statements`: the list this task (and the tasks it starts) appends to.
_counting: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "counting", default=None
)

WRITES = ("INSERT", "UPDATE", "DELETE")


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement `engine` sends from inside the block, in order.

    Only the code in the block and the tasks it starts count (a context variable marks
    them; SQLAlchemy runs the driver call in the caller's context): the gateway's background
    loops (scheduler, depth sampler, relay) run beside the test and would make counts vary.
    """
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _counting.get() is statements:
            statements.append(statement)

    token = _counting.set(statements)
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        _counting.reset(token)


def is_write(statement: str) -> bool:
    verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    return verb in WRITES


# The admission depth sampler's loop applies queue retention (a DELETE) on its own schedule,
# whatever the requests do: its writes are not any request's.
_MAINTENANCE_LOOPS = frozenset({"DepthMonitor.run"})


def _in_maintenance_loop() -> bool:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return False
    coro = task.get_coro() if task is not None else None
    code = getattr(coro, "cr_code", None)
    return code is not None and code.co_qualname in _MAINTENANCE_LOOPS


class WriteRecorder:
    """Records every INSERT/UPDATE/DELETE the engine sends while `recording` is set, from any
    task (a write made on the request's behalf in another task counts too) except the
    gateway's depth sampler, whose retention sweep runs on its own clock."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.recording = False
        self.writes: list[str] = []
        self._engine = engine
        event.listen(engine.sync_engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.recording and is_write(statement) and not _in_maintenance_loop():
            self.writes.append(statement)

    def close(self) -> None:
        event.remove(self._engine.sync_engine, "before_cursor_execute", self._on_execute)


def statement_shapes(statements: list[str], width: int) -> Counter[str]:
    """Statements by their first `width` characters, whitespace folded: their parameter and
    IN lists vary in length, their shape does not. For comparisons and readable failures."""
    return Counter(" ".join(s.split())[:width] for s in statements)


async def add_job_backlog(
    runtime: Runtime, principal: Principal, job: JobOptions, jobs: int
) -> None:
    """`jobs` queued copies of `job` for the tenant, written the way submissions write them
    (with their queue messages), 1,000 a transaction."""
    now = to_datetime(runtime.clock.now_ms())
    for start in range(0, jobs, 1000):
        prepared = [
            _prepare(principal, job, None, runtime.topology, None, None)
            for _ in range(min(1000, jobs - start))
        ]
        writes: PendingWrites = _build(
            prepared, [], principal.tenant_id, runtime.dispatcher.initial_status, now
        )[1]
        async with runtime.sessionmaker() as session:
            await write_pending(session, writes, runtime.dispatcher)
            await session.commit()
