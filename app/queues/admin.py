"""Operator routes of the queue controls: numbers, pause, resume, purge.

Operator only. This package imports no domain (tenants included), so the operator check is
attached where the router is mounted (`app/main.py`: `include_router(..., dependencies=
[Depends(require_operator)])`); every route here is tested for 401 and 403.

Each route first ends the transaction authentication opened: no database lock is held across
a call to Cloudflare (on SQLite it would be the write lock, which the emulator may need).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.core.deps import SessionDep
from app.core.errors import problem_responses
from app.core.openapi import Tag
from app.queues.deps import QueueControlsDep
from app.queues.schemas import QueueList, QueuePublic, QueuePurge, QueuePurged
from app.queues.topology import MAX_QUEUE_NAME

router = APIRouter(prefix="/v1/admin/queues", tags=[Tag.admin])

QueueName = Annotated[str, Path(max_length=MAX_QUEUE_NAME)]


@router.get("", response_model=QueueList, responses=problem_responses(401, 403, 503))
async def list_queues(controls: QueueControlsDep, session: SessionDep) -> QueueList:
    """Every queue of the topology: backlog, in flight, oldest age, dead letters, paused."""
    await session.commit()
    statuses = await controls.list_queues(session)
    await session.commit()  # the local engine applied expiry while counting
    return QueueList(data=[QueuePublic.of(s) for s in statuses])


@router.post(
    "/{name}/pause", response_model=QueuePublic, responses=problem_responses(401, 403, 404, 503)
)
async def pause_queue(
    name: QueueName, controls: QueueControlsDep, session: SessionDep
) -> QueuePublic:
    """Stop deliveries (idempotent): the queue still accepts jobs, consumers get none."""
    await session.commit()
    status = await controls.pause(session, name)
    await session.commit()
    return QueuePublic.of(status)


@router.post(
    "/{name}/resume", response_model=QueuePublic, responses=problem_responses(401, 403, 404, 503)
)
async def resume_queue(
    name: QueueName, controls: QueueControlsDep, session: SessionDep
) -> QueuePublic:
    """Deliver again (idempotent)."""
    await session.commit()
    status = await controls.resume(session, name)
    await session.commit()
    return QueuePublic.of(status)


@router.post(
    "/{name}/purge",
    response_model=QueuePurged,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def purge_queue(
    name: QueueName,
    controls: QueueControlsDep,
    session: SessionDep,
    body: QueuePurge | None = None,
) -> QueuePurged:
    """Delete every message (`{"confirm": "<name>"}` required); the jobs that waited in the
    queue become `cancelled`. Dead letter queues can be purged too (their jobs stay `dead`)."""
    await session.commit()
    result = await controls.purge(session, name, confirm=body.confirm if body else None)
    await session.commit()
    return QueuePurged.of(result)
