"""The scheduler loop: fires due cron schedules from inside the gateway process.

Guarantees:
- every occurrence fires at most once, however many gateways (runners) share the database:
  due rows are claimed `FOR UPDATE SKIP LOCKED` (PostgreSQL) or under SQLite's write lock,
  and the fire record's unique (schedule_id, scheduled_for) key backs that up;
- a fire, its job, the job's queue message or outbox row and the advanced `next_run_at`
  commit together, so a crash never leaves a fire without its job or fires twice;
- an occurrence fires no earlier than its time and, while a runner is up, at most about
  `poll_seconds` late; after downtime only the latest missed occurrence fires;
- time comes from the submitter's clock, so tests drive `run_once()` with a manual clock.
"""

from __future__ import annotations

import asyncio
import logging

from app.admission.service import AdmissionControl
from app.core.clock import to_datetime
from app.core.db import SessionMaker
from app.jobs.submitter import JobSubmitter
from app.scheduler import service as scheduler_service

logger = logging.getLogger(__name__)


class SchedulerRunner:
    """Fires due schedules every `poll_seconds` until `stop()`."""

    def __init__(
        self,
        sessionmaker: SessionMaker,
        submitter: JobSubmitter,
        *,
        admission: AdmissionControl | None = None,
        poll_seconds: float = 5.0,
        batch_size: int = 100,
        reader: SessionMaker | None = None,
    ):
        self._sessionmaker = sessionmaker
        # Read-only sessions: a poll that finds nothing due takes no write lock (SQLite).
        self._reader = reader
        self._submitter = submitter
        # Fires are admitted like submitted jobs; None only where no gateway runs (tools).
        self._admission = admission
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self._stopping = False
        self._wake = asyncio.Event()

    async def run_once(self) -> int:
        """Fire everything due now; returns how many fires succeeded."""
        fired = 0
        while True:
            now = to_datetime(self._submitter.clock.now_ms())
            if self._reader is not None:
                async with self._reader() as session:
                    if not await scheduler_service.any_due(session, now=now):
                        return fired
            async with self._sessionmaker() as session:
                results = await scheduler_service.fire_due(
                    session,
                    submitter=self._submitter,
                    now=now,
                    limit=self.batch_size,
                    admission=self._admission,
                )
                await session.commit()
            fired += sum(1 for result in results if result.job_id is not None)
            if len(results) < self.batch_size:
                return fired

    async def run(self) -> None:
        """Poll until `stop()`; survives database outages (logs and tries again)."""
        while not self._stopping:
            try:
                await self.run_once()
            except Exception:  # the loop must outlive any single failure
                logger.exception("scheduler iteration failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
