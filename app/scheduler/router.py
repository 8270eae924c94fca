"""HTTP routes of the scheduler: a tenant's cron schedules (thin: authorise, call, commit)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from app.admission.deps import JobsGate, admit_read
from app.admission.email_policy import recipients
from app.core.clock import to_datetime
from app.core.deps import ClockDep, SessionDep, require_json
from app.core.errors import problem_responses
from app.core.openapi import Tag
from app.jobs.deps import SubmitterDep
from app.jobs.schemas import JobPublic
from app.scheduler import service as scheduler_service
from app.scheduler.models import Schedule
from app.scheduler.schemas import ScheduleCreate, ScheduleList, SchedulePublic, ScheduleUpdate
from app.tenants.deps import JobsReader, JobsWriter

router = APIRouter(prefix="/v1/schedules", tags=[Tag.schedules])

ScheduleId = Annotated[str, Path(description="The schedule's id.", max_length=64)]


def _public(schedule: Schedule) -> SchedulePublic:
    return SchedulePublic.model_validate(schedule)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SchedulePublic,
    dependencies=[Depends(require_json)],
    responses=problem_responses(400, 401, 403, 409, 415, 422),
)
async def create_schedule(
    body: ScheduleCreate, principal: JobsWriter, session: SessionDep, clock: ClockDep
) -> SchedulePublic:
    """Create a cron schedule (UTC) that submits its job at every occurrence."""
    schedule = await scheduler_service.create_schedule(
        session,
        tenant_id=principal.tenant_id,
        body=body,
        now=to_datetime(clock.now_ms()),
    )
    await session.commit()
    return _public(schedule)


@router.get(
    "",
    response_model=ScheduleList,
    dependencies=[Depends(admit_read)],
    responses=problem_responses(401, 403, 429, 503),
)
async def list_schedules(principal: JobsReader, session: SessionDep) -> ScheduleList:
    """The caller's schedules, by name."""
    rows = await scheduler_service.list_schedules(session, tenant_id=principal.tenant_id)
    return ScheduleList(data=[_public(row) for row in rows], count=len(rows))


@router.get(
    "/{schedule_id}",
    response_model=SchedulePublic,
    dependencies=[Depends(admit_read)],
    responses=problem_responses(401, 403, 404, 429, 503),
)
async def get_schedule(
    schedule_id: ScheduleId, principal: JobsReader, session: SessionDep
) -> SchedulePublic:
    """One of the caller's schedules, with its next and last fire."""
    return _public(
        await scheduler_service.get_schedule(
            session, tenant_id=principal.tenant_id, schedule_id=schedule_id
        )
    )


@router.patch(
    "/{schedule_id}",
    response_model=SchedulePublic,
    dependencies=[Depends(require_json)],
    responses=problem_responses(400, 401, 403, 404, 409, 415, 422),
)
async def update_schedule(
    schedule_id: ScheduleId,
    body: ScheduleUpdate,
    principal: JobsWriter,
    session: SessionDep,
    clock: ClockDep,
) -> SchedulePublic:
    """Change a schedule; a new cron or re-enabling counts from now (no catch-up)."""
    schedule = await scheduler_service.update_schedule(
        session,
        tenant_id=principal.tenant_id,
        schedule_id=schedule_id,
        changes=body,
        now=to_datetime(clock.now_ms()),
    )
    await session.commit()
    return _public(schedule)


@router.delete(
    "/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 403, 404),
)
async def delete_schedule(
    schedule_id: ScheduleId, principal: JobsWriter, session: SessionDep
) -> Response:
    """Delete a schedule; the jobs it already submitted are kept."""
    await scheduler_service.delete_schedule(
        session, tenant_id=principal.tenant_id, schedule_id=schedule_id
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{schedule_id}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 429, 503),
)
async def run_schedule(
    schedule_id: ScheduleId,
    principal: JobsWriter,
    gate: JobsGate,
    session: SessionDep,
    submitter: SubmitterDep,
) -> JobPublic:
    """Fire the schedule now (also when disabled); its cron timetable is unchanged."""
    schedule = await scheduler_service.get_schedule(
        session, tenant_id=principal.tenant_id, schedule_id=schedule_id
    )
    await gate.admit_jobs(
        principal.tenant_id, [str(schedule.job["type"])], recipients([schedule.job])
    )
    job = await scheduler_service.run_now(session, submitter=submitter, schedule=schedule)
    await session.commit()
    return JobPublic.model_validate(job)
