"""HTTP routes of the jobs domain: thin, they authorise, call one service, commit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from app.admission.deps import BatchGate, JobsGate, admit_read
from app.admission.email_policy import recipients
from app.core.deps import SessionDep, require_json
from app.core.errors import problem_responses
from app.core.openapi import Tag
from app.jobs import operations
from app.jobs import service as jobs_service
from app.jobs.accept import trace_of
from app.jobs.deps import JobOperationsDep, SubmitterDep
from app.jobs.models import Job, JobStatus
from app.jobs.payloads import JOB_EXAMPLES, JobRequest, JobTypeName
from app.jobs.schemas import (
    AttemptList,
    BulkRetryRequest,
    BulkRetryResult,
    JobBatchRequest,
    JobBatchResponse,
    JobPage,
    JobPublic,
)
from app.jobs.submitter import count_accepted
from app.tenants.deps import JobsReader, JobsWriter

# Plain submissions are answered before they reach these routes (app/jobs/accept.py).
router = APIRouter(prefix="/v1/jobs", tags=[Tag.jobs])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat within the window → the original job (200); other body → 409.",
    ),
]
# Room for the `:<index>` suffix (at most `:99`) within the 255 characters a key may have.
BatchIdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=251,
        description=(
            "Gives each job without its own `idempotency_key` the key `<header>:<index>` "
            "(0-based): repeating the batch returns the original jobs (200)."
        ),
    ),
]
JobId = Annotated[str, Path(description="The job id returned on submission.", max_length=64)]


# A batch of one job of each type, then one batch per type.
BATCH_EXAMPLES = {
    "every-type": {
        "summary": "One job of each type",
        "value": {"jobs": [example["value"] for example in JOB_EXAMPLES.values()]},
    },
    **{
        name: {"summary": example["summary"], "value": {"jobs": [example["value"]]}}
        for name, example in JOB_EXAMPLES.items()
    },
}


def _public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    dependencies=[Depends(require_json)],
    openapi_extra={"requestBody": {"content": {"application/json": {"examples": JOB_EXAMPLES}}}},
    responses={
        200: {"model": JobPublic, "description": "Idempotent repeat: the original job."},
        **problem_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    },
)
async def submit_job(
    job: JobRequest,
    principal: JobsWriter,
    gate: JobsGate,
    session: SessionDep,
    submitter: SubmitterDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    """Accept one job: 202 once it is stored durably and queued."""
    await gate.admit_jobs(principal.tenant_id, [job.type], recipients([job]))
    # End the reads of authentication and admission first: on SQLite they hold the write
    # lock, which the group committer needs.
    await session.commit()
    [submitted] = await submitter.submit(
        session,
        principal,
        [(job, idempotency_key or job.idempotency_key)],
        trace=trace_of(request),
        grouped=True,
    )
    await session.commit()
    count_accepted([submitted])
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return _public(submitted.job)


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobBatchResponse,
    dependencies=[Depends(require_json)],
    openapi_extra={
        "requestBody": {"content": {"application/json": {"examples": BATCH_EXAMPLES}}}
    },
    responses={
        200: {
            "model": JobBatchResponse,
            "description": "Idempotent repeat: every job's key was seen, the original jobs.",
        },
        **problem_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    },
)
async def submit_job_batch(
    batch: JobBatchRequest,
    principal: JobsWriter,
    gate: BatchGate,
    session: SessionDep,
    submitter: SubmitterDep,
    request: Request,
    response: Response,
    idempotency_key: BatchIdempotencyKey = None,
) -> JobBatchResponse:
    """Accept 1..100 jobs atomically: all are stored, or none.

    202 when at least one job is new; 200 when every job repeats an earlier key (a replayed
    batch), as for a single job. A batch mixing new and repeated keys is a 202 whose list
    holds the original job for each repeated key."""
    await gate.admit_jobs(
        principal.tenant_id,
        [job.type for job in batch.jobs],
        recipients(batch.jobs, loc=("jobs",)),
    )
    await session.commit()  # as in submit_job: release the read transaction
    submitted = await submitter.submit(
        session,
        principal,
        [
            (job, job.idempotency_key or _derived_key(idempotency_key, index))
            for index, job in enumerate(batch.jobs)
        ],
        trace=trace_of(request),
        batch=True,
        grouped=True,
    )
    await session.commit()
    count_accepted(submitted)
    if not any(item.created for item in submitted):
        response.status_code = status.HTTP_200_OK
    return JobBatchResponse(jobs=[_public(item.job) for item in submitted])


def _derived_key(header: str | None, index: int) -> str | None:
    """A batch's Idempotency-Key, made one key per job by its position."""
    return None if header is None else f"{header}:{index}"


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    dependencies=[Depends(admit_read)],
    responses=problem_responses(401, 403, 404, 429, 503),
)
async def get_job(job_id: JobId, principal: JobsReader, session: SessionDep) -> JobPublic:
    """One of the caller's jobs, with its status, attempts and progress."""
    return _public(
        await jobs_service.get_job(session, tenant_id=principal.tenant_id, job_id=job_id)
    )


@router.get(
    "",
    response_model=JobPage,
    dependencies=[Depends(admit_read)],
    responses=problem_responses(400, 401, 403, 422, 429, 503),
)
async def list_jobs(
    principal: JobsReader,
    session: SessionDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    job_type: Annotated[JobTypeName | None, Query(alias="type")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    queue: Annotated[str | None, Query(max_length=63)] = None,
) -> JobPage:
    """The caller's jobs, newest first, filtered by status, type and queue, cursor-paged."""
    jobs, next_cursor = await operations.list_jobs(
        session,
        tenant_id=principal.tenant_id,
        status=status_filter,
        job_type=job_type,
        queue=queue,
        cursor=cursor,
        limit=limit,
    )
    return JobPage(data=[_public(job) for job in jobs], next_cursor=next_cursor)


@router.get(
    "/{job_id}/attempts",
    response_model=AttemptList,
    dependencies=[Depends(admit_read)],
    responses=problem_responses(401, 403, 404, 429, 503),
)
async def list_job_attempts(
    job_id: JobId, principal: JobsReader, session: SessionDep
) -> AttemptList:
    """The job's attempts, oldest first: when each ran, how it ended and why."""
    attempts = await operations.list_attempts(session, job_id=job_id, tenant_id=principal.tenant_id)
    return AttemptList(data=[operations.attempt_public(a) for a in attempts])


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def cancel_job(
    job_id: JobId, principal: JobsWriter, session: SessionDep, ops: JobOperationsDep
) -> JobPublic:
    """Cancel an accepted, queued or retrying job: it will not run. 409 once it runs."""
    job = await ops.cancel(session, job_id=job_id, tenant_id=principal.tenant_id)
    await session.commit()
    return _public(job)


@router.post(
    "/{job_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def retry_job(
    job_id: JobId, principal: JobsWriter, session: SessionDep, ops: JobOperationsDep
) -> JobPublic:
    """Queue a failed, dead or cancelled job again: same id, history kept, fresh attempts."""
    outcome = await ops.retry(session, job_id=job_id, tenant_id=principal.tenant_id)
    await session.commit()
    await ops.after_commit(outcome)
    assert outcome.job is not None
    return _public(outcome.job)


@router.post(
    "/retry",
    response_model=BulkRetryResult,
    dependencies=[Depends(require_json)],
    responses=problem_responses(400, 401, 403, 415, 422, 503),
)
async def retry_jobs(
    body: BulkRetryRequest, principal: JobsWriter, session: SessionDep, ops: JobOperationsDep
) -> BulkRetryResult:
    """Queue again the caller's dead or failed jobs matching the filters (paced per queue);
    `dry_run` only counts them."""
    selection = operations.selection_of(body, tenant_id=principal.tenant_id)
    outcome = await ops.retry_many(session, selection, dry_run=body.dry_run)
    await session.commit()
    await ops.after_commit(outcome)
    return BulkRetryResult(matched=outcome.matched, retried=outcome.retried)
