"""The composition root: builds every component of a process once and wires them.

Only the entry points (`app.main`, `app.cli`) import this module; the domain packages are
handed what they use (constructor arguments, FastAPI dependencies) and never reach back here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admission.config import AdmissionSettings
from app.admission.depth import CloudflareDepth, SampleAllFn, each_queue
from app.admission.service import AdmissionControl
from app.consumer.breaker import open_breakers
from app.core.clock import Clock, OffsetFileClock, SystemClock
from app.core.db import (
    SessionMaker,
    create_engine,
    create_reader,
    create_sessionmaker,
    is_sqlite,
    sqlite_file,
)
from app.core.security import SecretBox
from app.dashboard.sessions import SessionCodec
from app.handlers.shop_url import ShopUrlGuard
from app.jobs import counters as jobs_counters
from app.jobs import lifecycle
from app.jobs.committer import GroupCommitter, GroupWriter
from app.jobs.dead_letters import CloudflareDeadLetters, LocalDeadLetters
from app.jobs.dispatchers import Dispatcher, LocalDispatcher, OutboxDispatcher
from app.jobs.operations import DeadLetters, JobOperations
from app.jobs.payloads import JOB_TYPES
from app.jobs.pg_writer import PostgresGroupWriter
from app.jobs.sqlite_writer import SqliteGroupWriter
from app.jobs.submitter import JobSubmitter
from app.outbox import service as outbox_service
from app.outbox.relay import OutboxRelay
from app.queues.base import QueueBackend
from app.queues.cloudflare import CloudflareQueues, RetryPolicy
from app.queues.local import LocalQueueEngine
from app.queues.service import QueueControls
from app.queues.topology import Topology, load_topology
from app.settings import Settings
from app.tenants.deps import Credentials
from app.tenants.service import ApiKeyCache


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: SessionMaker
    # Sessions for background reads only: they never hold SQLite's write lock.
    reader: SessionMaker
    clock: Clock
    topology: Topology
    # The local engine on the job store's database (the backend when QUEUE_BACKEND=local).
    queue_engine: LocalQueueEngine
    # Where jobs are published and pulled: the local engine or Cloudflare.
    backend: QueueBackend
    dispatcher: Dispatcher
    box: SecretBox
    # Group commit for key-less submissions.
    committer: GroupCommitter
    # The one way in for new jobs (API routes, webhooks, scheduler).
    submitter: JobSubmitter
    # Authentication's share: API key cache, operator token, JWT verifier.
    credentials: Credentials
    # Cancel and retry (with dead letter removal) of stored jobs.
    operations: JobOperations
    # The operator's pause, resume, purge and numbers, on the backend in use.
    queue_controls: QueueControls
    # Set with the Cloudflare backend: publishes the outbox after commit.
    relay: OutboxRelay | None = None

    async def open(self) -> None:
        """Resolve queue ids with Cloudflare (processes that pull or publish directly)."""
        if isinstance(self.backend, CloudflareQueues):
            await self.backend.start(self.topology)

    async def close(self) -> None:
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
    topology = load_topology(settings.queues.wrangler_config, job_types=JOB_TYPES)
    db_engine = engine or create_engine(settings.db)
    sessionmaker = create_sessionmaker(db_engine)
    reader = create_reader(db_engine)
    clock = clock or (
        OffsetFileClock(settings.test_clock_file) if settings.test_clock_file else SystemClock()
    )
    queue_engine = LocalQueueEngine(sessionmaker, topology.queues, clock=clock, reader=reader)
    backend: QueueBackend = queue_engine
    dispatcher: Dispatcher = LocalDispatcher(queue_engine)
    relay: OutboxRelay | None = None
    dead_letters: DeadLetters = LocalDeadLetters()
    if settings.queues.backend == "cloudflare":
        if not settings.cloudflare.api_token:
            raise ValueError("JOBGATE_QUEUE_BACKEND=cloudflare needs JOBGATE_CF_API_TOKEN")
        backend = CloudflareQueues(
            account_id=settings.cloudflare.account_id,
            api_token=settings.cloudflare.api_token,
            base_url=settings.cloudflare.api_base_url,
            timeout_seconds=settings.cloudflare.timeout_seconds,
            retry=RetryPolicy(max_retries=settings.cloudflare.max_retries),
        )
        relay = OutboxRelay(
            sessionmaker,
            backend,
            clock,
            on_published=lifecycle.outbox_published,
            on_failed=lifecycle.outbox_failed,
            linger_ms=settings.outbox.linger_ms,
            poll_ms=settings.outbox.poll_ms,
            max_attempts=settings.outbox.max_attempts,
            max_backoff_ms=settings.outbox.max_backoff_ms,
            prepare=partial(backend.start, topology),
        )
        dispatcher = OutboxDispatcher(clock, wake=relay.wake)
        dead_letters = CloudflareDeadLetters(
            backend,
            account_id=settings.cloudflare.account_id,
            api_token=settings.cloudflare.api_token,
            base_url=settings.cloudflare.api_base_url,
        )
    committer = GroupCommitter(sessionmaker, dispatcher, writer=group_writer(db_engine, settings))
    submitter = JobSubmitter(
        dispatcher=dispatcher,
        topology=topology,
        clock=clock,
        idempotency_window=timedelta(seconds=settings.jobs.idempotency_window_seconds),
        combiner=committer,
    )
    return Runtime(
        settings=settings,
        engine=db_engine,
        sessionmaker=sessionmaker,
        reader=reader,
        clock=clock,
        topology=topology,
        queue_engine=queue_engine,
        backend=backend,
        dispatcher=dispatcher,
        box=SecretBox(settings.security.secret_key),
        relay=relay,
        committer=committer,
        submitter=submitter,
        credentials=Credentials(settings.jwt, settings.security.admin_token, clock, ApiKeyCache()),
        operations=JobOperations(
            dispatcher=dispatcher,
            topology=topology,
            clock=clock,
            dead_letters=dead_letters,
            bulk_retry_rate=settings.jobs.bulk_retry_rate,
        ),
        queue_controls=QueueControls(
            backend,
            topology,
            clock,
            cancel_purged=lifecycle.cancel_purged,
            running_by_queue=lifecycle.running_by_queue,
            prepare=(
                partial(backend.start, topology) if isinstance(backend, CloudflareQueues) else None
            ),
        ),
    )


def group_writer(engine: AsyncEngine, settings: Settings) -> GroupWriter | None:
    """The group commit's raw writer for this database: the stdlib driver's for a SQLite
    file, asyncpg's for PostgreSQL (None: the rows go through an ORM session)."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
        return PostgresGroupWriter(engine)
    return sqlite_group_writer(engine, settings)


def sqlite_group_writer(engine: AsyncEngine, settings: Settings) -> SqliteGroupWriter | None:
    """The group commit's own SQLite writer, for a SQLite file (None otherwise)."""
    path = sqlite_file(engine.url) if is_sqlite(engine) else None
    if path is None:
        return None
    return SqliteGroupWriter(
        path, synchronous=settings.db.sqlite_synchronous, dialect=engine.dialect
    )


def build_admission(
    runtime: Runtime, settings: AdmissionSettings | None = None
) -> AdmissionControl:
    """The gateway's admission control over `runtime`: depth is sampled from the backend in
    use (Cloudflare's metrics API, else the local engine) and, with the outbox, its backlog."""
    settings = settings or runtime.settings.admission
    # Counter rows, all queues in one read: no scan, no write.
    sample: SampleAllFn = runtime.queue_engine.stored_all
    if isinstance(runtime.backend, CloudflareQueues):
        sample = each_queue(
            CloudflareDepth(runtime.backend, runtime.clock, poll_ms=settings.cf_metrics_poll_ms)
        )
    pending = None
    if runtime.relay is not None:
        pending = partial(outbox_service.pending_by_queue, runtime.reader)
    return AdmissionControl.build(
        settings,
        breaker_cooldown_seconds=runtime.settings.breaker.cooldown_seconds,
        clock=runtime.clock,
        topology=runtime.topology,
        sample=sample,
        pending=pending,
        count_unfinished=jobs_counters.count_unfinished,
        open_breakers=open_breakers,
        reader=runtime.reader,
    )


def provide(app: FastAPI, runtime: Runtime, admission: AdmissionControl) -> None:
    """Put each component a request may use on `app.state`, once; routes take them through
    their narrow dependencies (`app/core/deps.py`, `app/jobs/deps.py`, ...)."""
    state = app.state
    state.webhook_settings = runtime.settings.webhooks
    state.shop_url_guard = ShopUrlGuard.from_settings(
        runtime.settings.prestashop, runtime.settings.environment
    )
    state.clock = runtime.clock
    state.box = runtime.box
    state.engine = runtime.engine
    state.sessionmaker = runtime.sessionmaker
    state.reader = runtime.reader  # read-only sessions: credential lookups
    state.submitter = runtime.submitter
    state.job_operations = runtime.operations
    state.credentials = runtime.credentials
    state.admission = admission
    state.dashboard_sessions = SessionCodec(runtime.settings.security.secret_key)
    state.queue_controls = runtime.queue_controls
