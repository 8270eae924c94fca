"""Operator routes of the jobs domain: every tenant's jobs, their attempts, cancel and retry.

Only the operator (`ADMIN_TOKEN` or a `jgo_` key) may call them; a tenant's keys, even
`admin` ones, get 403 (a tenant acts on its own jobs through `/v1/jobs`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from app.core.deps import SessionDep, require_json
from app.core.errors import problem_responses
from app.core.openapi import Tag
from app.jobs import operations
from app.jobs.deps import JobOperationsDep
from app.jobs.models import Job, JobStatus
from app.jobs.payloads import JobTypeName
from app.jobs.schemas import (
    AdminBulkRetryRequest,
    AdminJobPage,
    AdminJobPublic,
    AttemptList,
    BulkRetryResult,
)
from app.tenants.deps import Operator

router = APIRouter(prefix="/v1/admin/jobs", tags=[Tag.admin])

JobId = Annotated[str, Path(description="The job's id.", max_length=64)]


def _admin_public(job: Job) -> AdminJobPublic:
    return AdminJobPublic.model_validate(job)


@router.get(
    "",
    response_model=AdminJobPage,
    responses=problem_responses(400, 401, 403, 422),
)
async def list_all_jobs(
    _operator: Operator,
    session: SessionDep,
    tenant_id: Annotated[str | None, Query(max_length=36)] = None,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    job_type: Annotated[JobTypeName | None, Query(alias="type")] = None,
    queue: Annotated[str | None, Query(max_length=63)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AdminJobPage:
    """Every tenant's jobs, newest first, filtered by tenant, status, type and queue."""
    jobs, next_cursor = await operations.list_jobs(
        session,
        tenant_id=tenant_id,
        status=status_filter,
        job_type=job_type,
        queue=queue,
        cursor=cursor,
        limit=limit,
    )
    return AdminJobPage(data=[_admin_public(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=AdminJobPublic, responses=problem_responses(401, 403, 404))
async def get_any_job(job_id: JobId, _operator: Operator, session: SessionDep) -> AdminJobPublic:
    """Any tenant's job."""
    return _admin_public(await operations.get_job(session, job_id=job_id, tenant_id=None))


@router.get(
    "/{job_id}/attempts", response_model=AttemptList, responses=problem_responses(401, 403, 404)
)
async def list_any_job_attempts(
    job_id: JobId, _operator: Operator, session: SessionDep
) -> AttemptList:
    """Any tenant's job's attempts, oldest first."""
    attempts = await operations.list_attempts(session, job_id=job_id, tenant_id=None)
    return AttemptList(data=[operations.attempt_public(a) for a in attempts])


@router.post(
    "/{job_id}/cancel",
    response_model=AdminJobPublic,
    responses=problem_responses(401, 403, 404, 409),
)
async def cancel_any_job(
    job_id: JobId, _operator: Operator, session: SessionDep, ops: JobOperationsDep
) -> AdminJobPublic:
    """Cancel any tenant's accepted, queued or retrying job."""
    job = await ops.cancel(session, job_id=job_id, tenant_id=None)
    await session.commit()
    return _admin_public(job)


@router.post(
    "/{job_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AdminJobPublic,
    responses=problem_responses(401, 403, 404, 409),
)
async def retry_any_job(
    job_id: JobId, _operator: Operator, session: SessionDep, ops: JobOperationsDep
) -> AdminJobPublic:
    """Queue any tenant's failed, dead or cancelled job again (fresh attempts budget)."""
    outcome = await ops.retry(session, job_id=job_id, tenant_id=None)
    await session.commit()
    await ops.after_commit(outcome)
    assert outcome.job is not None
    return _admin_public(outcome.job)


@router.post(
    "/retry",
    response_model=BulkRetryResult,
    dependencies=[Depends(require_json)],
    responses=problem_responses(400, 401, 403, 415, 422),
)
async def retry_all_jobs(
    body: AdminBulkRetryRequest, _operator: Operator, session: SessionDep, ops: JobOperationsDep
) -> BulkRetryResult:
    """Queue again dead or failed jobs of every tenant (or `tenant_id`'s), paced per queue."""
    selection = operations.selection_of(body, tenant_id=body.tenant_id)
    outcome = await ops.retry_many(session, selection, dry_run=body.dry_run)
    await session.commit()
    await ops.after_commit(outcome)
    return BulkRetryResult(matched=outcome.matched, retried=outcome.retried)
