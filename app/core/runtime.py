"""Everything a process shares: settings, database, clock, topology, queue engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.clock import Clock, OffsetFileClock, SystemClock
from app.core.config import Settings
from app.core.db import SessionMaker, create_engine, create_sessionmaker
from app.core.security import SecretBox
from app.jobs.committer import GroupCommitter
from app.jobs.payloads import JOB_TYPES
from app.jobs.service import Dispatcher
from app.outbox.relay import OutboxRelay
from app.outbox.service import OutboxDispatcher
from app.queues.base import QueueBackend
from app.queues.cloudflare import CloudflareQueues, RetryPolicy
from app.queues.local import LocalDispatcher, LocalQueueEngine
from app.queues.topology import Topology, load_topology
from app.tenants.service import ApiKeyCache


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: SessionMaker
    clock: Clock
    topology: Topology
    # The local engine on the job store's database (the backend when QUEUE_BACKEND=local).
    queue_engine: LocalQueueEngine
    # Where jobs are published and pulled: the local engine or Cloudflare.
    backend: QueueBackend
    dispatcher: Dispatcher
    box: SecretBox
    # Set with the Cloudflare backend: publishes the outbox after commit.
    relay: OutboxRelay | None = None
    key_cache: ApiKeyCache = field(default_factory=ApiKeyCache)
    # Group commit for key-less submissions (set by build_runtime).
    committer: GroupCommitter | None = None

    async def open(self) -> None:
        """Resolve queue ids with Cloudflare (processes that pull or publish directly)."""
        if isinstance(self.backend, CloudflareQueues):
            await self.backend.start(self.topology)

    async def close(self) -> None:
        if self.committer is not None:
            await self.committer.close()
        await self.backend.close()
        await self.queue_engine.close()
        await self.engine.dispose()


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    engine: AsyncEngine | None = None,
) -> Runtime:
    """Wire the process; raises TopologyError/ValueError on bad configuration."""
    settings.check_production_secrets()
    topology = load_topology(settings.wrangler_config, job_types=JOB_TYPES)
    db_engine = engine or create_engine(settings)
    sessionmaker = create_sessionmaker(db_engine)
    clock = clock or (
        OffsetFileClock(settings.test_clock_file) if settings.test_clock_file else SystemClock()
    )
    queue_engine = LocalQueueEngine(sessionmaker, topology.queues, clock=clock)
    backend: QueueBackend = queue_engine
    dispatcher: Dispatcher = LocalDispatcher(queue_engine)
    relay: OutboxRelay | None = None
    if settings.queue_backend == "cloudflare":
        if not settings.cf_api_token:
            raise ValueError("JOBGATE_QUEUE_BACKEND=cloudflare needs JOBGATE_CF_API_TOKEN")
        backend = CloudflareQueues(
            account_id=settings.cf_account_id,
            api_token=settings.cf_api_token,
            base_url=settings.cf_api_base_url,
            timeout_seconds=settings.cf_timeout_seconds,
            retry=RetryPolicy(max_retries=settings.cf_max_retries),
        )
        relay = OutboxRelay(
            sessionmaker,
            backend,
            clock,
            linger_ms=settings.outbox_linger_ms,
            poll_ms=settings.outbox_poll_ms,
            max_attempts=settings.outbox_max_attempts,
            max_backoff_ms=settings.outbox_max_backoff_ms,
            prepare=partial(backend.start, topology),
        )
        dispatcher = OutboxDispatcher(clock, wake=relay.wake)
    return Runtime(
        settings=settings,
        engine=db_engine,
        sessionmaker=sessionmaker,
        clock=clock,
        topology=topology,
        queue_engine=queue_engine,
        backend=backend,
        dispatcher=dispatcher,
        box=SecretBox(settings.secret_key),
        relay=relay,
        committer=GroupCommitter(sessionmaker, dispatcher),
    )
