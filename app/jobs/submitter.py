"""The one way in for new jobs: the jobs and batch routes, webhooks and the scheduler.

Built once by the composition root with the process's dispatcher, topology, clock and
idempotency window, so callers only say who submits what.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock, to_datetime
from app.jobs.dispatchers import Dispatcher
from app.jobs.payloads import JobOptions
from app.jobs.service import SubmittedJob, WriteCombiner, submit_jobs, submit_keyless
from app.observability import metrics
from app.queues.topology import Topology
from app.tenants.schemas import Principal


class JobSubmitter:
    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        topology: Topology,
        clock: Clock,
        idempotency_window: timedelta,
        combiner: WriteCombiner | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.topology = topology
        self.clock = clock
        self.idempotency_window = idempotency_window
        self._combiner = combiner

    async def submit(
        self,
        session: AsyncSession,
        principal: Principal,
        requests: Sequence[tuple[JobOptions, str | None]],
        *,
        now: datetime | None = None,
        trace: dict[str, str] | None = None,
        batch: bool = False,
        grouped: bool = False,
    ) -> list[SubmittedJob]:
        """Store jobs (all or none) in `session` and hand them to the queue (see `submit_jobs`).

        `grouped`: key-less jobs are committed by the shared group commit before this returns
        (API requests); otherwise everything stays in the caller's transaction.
        """
        return await submit_jobs(
            session,
            principal=principal,
            requests=requests,
            dispatcher=self.dispatcher,
            topology=self.topology,
            now=now or to_datetime(self.clock.now_ms()),
            idempotency_window=self.idempotency_window,
            trace=trace,
            batch=batch,
            combiner=self._combiner if grouped else None,
        )

    async def submit_keyless(
        self,
        principal: Principal,
        requests: Sequence[JobOptions],
        *,
        trace: dict[str, str] | None = None,
        batch: bool = False,
    ) -> list[SubmittedJob]:
        """`submit` for jobs without idempotency keys, written by the group commit: no
        session of the caller's is needed (the accept fast path)."""
        if self._combiner is None:
            raise RuntimeError("submit_keyless needs the group committer")
        return await submit_keyless(
            principal=principal,
            requests=requests,
            dispatcher=self.dispatcher,
            topology=self.topology,
            now=to_datetime(self.clock.now_ms()),
            trace=trace,
            batch=batch,
            combiner=self._combiner,
        )


def count_accepted(submitted: Iterable[SubmittedJob]) -> None:
    """Count the jobs this submission created (idempotent repeats are not new work)."""
    created = Counter((item.type, item.queue) for item in submitted if item.created)
    for (job_type, queue), count in created.items():
        metrics.jobs_accepted.labels(type=job_type, queue=queue).inc(count)
