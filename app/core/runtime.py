"""Everything a process shares: settings, database, clock, topology, queue engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.clock import Clock, SystemClock
from app.core.config import Settings
from app.core.db import SessionMaker, create_engine, create_sessionmaker
from app.core.security import SecretBox
from app.jobs.payloads import JOB_TYPES
from app.jobs.service import Dispatcher
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
    queue_engine: LocalQueueEngine
    dispatcher: Dispatcher
    box: SecretBox
    key_cache: ApiKeyCache = field(default_factory=ApiKeyCache)

    async def close(self) -> None:
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
    clock = clock or SystemClock()
    queue_engine = LocalQueueEngine(sessionmaker, topology.queues, clock=clock)
    if settings.queue_backend != "local":
        raise ValueError(
            f"JOBGATE_QUEUE_BACKEND={settings.queue_backend!r} is not available in this build"
        )
    return Runtime(
        settings=settings,
        engine=db_engine,
        sessionmaker=sessionmaker,
        clock=clock,
        topology=topology,
        queue_engine=queue_engine,
        dispatcher=LocalDispatcher(queue_engine),
        box=SecretBox(settings.secret_key),
    )
