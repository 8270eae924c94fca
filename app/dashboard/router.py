"""`/dashboard`: server-rendered pages over the jobs, queues, schedules and breakers.

Thin: each page authorises (`ViewerDep`: operator or a tenant's admin), reads through
`app.dashboard.service`, renders a template. Forms post back and are answered with a 303 to
the page that shows the result. Actions call the jobs, queues and scheduler services.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.admission.deps import JobsGate
from app.admission.email_policy import recipients
from app.core.clock import to_datetime
from app.core.deps import ClockDep, SessionDep
from app.core.errors import Unauthorized, ValidationFailed
from app.dashboard import service as dashboard_service
from app.dashboard.deps import (
    FormDep,
    OperatorViewer,
    SessionCodecDep,
    Viewer,
    ViewerDep,
    check_role,
    read_form,
)
from app.dashboard.pages import (
    HOME_PATH,
    LOGIN_PATH,
    DashboardRoute,
    back_to,
    render,
    safe_next,
)
from app.dashboard.service import JobFilters
from app.dashboard.sessions import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
)
from app.jobs import operations
from app.jobs.deps import JobOperationsDep, SubmitterDep
from app.jobs.models import FINISHED_STATUSES, JobStatus
from app.jobs.operations import RetrySelection
from app.jobs.payloads import JOB_TYPES
from app.queues.deps import QueueControlsDep
from app.queues.service import QueueControls, QueueStatus
from app.scheduler import service as scheduler_service
from app.scheduler.schemas import ScheduleUpdate
from app.tenants.deps import CredentialsDep, authenticate_token

router = APIRouter(
    prefix="/dashboard", tags=["dashboard"], include_in_schema=False, route_class=DashboardRoute
)

JobId = Annotated[str, Path(max_length=64)]
ScheduleId = Annotated[str, Path(max_length=64)]
PAGE_SIZE = 50
# Pages showing unfinished jobs reload themselves: live progress without JavaScript.
REFRESH_SECONDS = 3
MAX_SELECTED = 100
MAX_BULK_RETRY = 1_000
RETRYABLE = frozenset({JobStatus.failed, JobStatus.dead, JobStatus.cancelled})
CANCELLABLE = frozenset({JobStatus.accepted, JobStatus.queued, JobStatus.retrying})


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


# --- Login ------------------------------------------------------------------------------


def _login_page(
    request: Request,
    codec: SessionCodecDep,
    clock: ClockDep,
    *,
    next_path: str,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    nonce = codec.new_login_nonce(now_s=clock.now_ms() // 1000)
    response = render(
        request,
        "login.html",
        None,
        {"next": next_path, "csrf": codec.csrf_token(nonce), "error": error},
        status_code=status_code,
    )
    _set_cookie(response, request, LOGIN_COOKIE, nonce, LOGIN_FORM_SECONDS)
    return response


@router.get("/login")
async def login_page(
    request: Request,
    codec: SessionCodecDep,
    clock: ClockDep,
    next_path: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> Response:
    return _login_page(request, codec, clock, next_path=safe_next(next_path))


@router.post("/login")
async def login(
    request: Request,
    session: SessionDep,
    credentials: CredentialsDep,
    codec: SessionCodecDep,
    clock: ClockDep,
) -> Response:
    """Paste an operator key (or the admin token) or a tenant's admin key."""
    form = await read_form(request)
    now_s = clock.now_ms() // 1000
    next_path = safe_next(form.get("next"))
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not (
        codec.login_nonce_valid(nonce, now_s=now_s) and codec.csrf_valid(nonce, form.get("csrf"))
    ):
        return _login_page(
            request,
            codec,
            clock,
            next_path=next_path,
            error="The login form expired: try again.",
            status_code=403,
        )
    key = (form.get("key") or "").strip()
    try:
        if not key:
            raise Unauthorized("paste a key")
        principal = await authenticate_token(key, session, credentials)
    except Unauthorized:
        return _login_page(
            request,
            codec,
            clock,
            next_path=next_path,
            error="This key is not valid.",
            status_code=401,
        )
    await session.commit()
    check_role(principal)
    response = back_to(next_path)
    _set_cookie(response, request, SESSION_COOKIE, codec.seal(key, now_s=now_s), SESSION_SECONDS)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout")
async def logout(_form: FormDep) -> Response:
    response = back_to(LOGIN_PATH)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


# --- Queues -----------------------------------------------------------------------------


@router.get("")
async def home(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    clock: ClockDep,
    controls: QueueControlsDep,
) -> Response:
    """The operator's queue overview; a tenant's admin starts at its jobs."""
    if not viewer.operator:
        return back_to(f"{HOME_PATH}/jobs")
    statuses = await controls.list_queues(session)
    await session.commit()  # the local engine expires messages while counting
    throughput = await dashboard_service.throughput_per_minute(
        session, now=to_datetime(clock.now_ms())
    )
    queues = [
        dashboard_service.QueueRow(
            name=status.name,
            dead_letter_queue=status.dead_letter_queue,
            throughput=throughput.get(status.name, 0.0),
            backlog=status.backlog,
            in_flight=status.in_flight,
            oldest_age_seconds=status.oldest_age_seconds,
            dead_letter_backlog=status.dead_letter_backlog,
            paused=status.paused,
            controls=True,
        )
        for status in statuses
    ]
    return render(request, "queues.html", viewer, {"queues": queues})


QueueName = Annotated[str, Path(max_length=63)]


QueueControl = Callable[[QueueControls, AsyncSession, str], Awaitable[QueueStatus]]


def _add_queue_control(action: str, control: QueueControl, doc: str) -> None:
    """`POST /queues/{name}/<action>`: the operator's control, then back to the home page."""

    async def control_queue(
        name: QueueName,
        _viewer: OperatorViewer,
        _form: FormDep,
        session: SessionDep,
        controls: QueueControlsDep,
    ) -> Response:
        await control(controls, session, name)
        await session.commit()
        return back_to(HOME_PATH)

    router.add_api_route(
        f"/queues/{{name}}/{action}",
        control_queue,
        methods=["POST"],
        name=f"{action}_queue",
        description=doc,
    )


_add_queue_control(
    "pause",
    QueueControls.pause,
    "Pulls get nothing until resumed; the queue still accepts messages.",
)
_add_queue_control("resume", QueueControls.resume, "Deliveries start again.")


@router.get("/queues/{name}/purge")
async def purge_page(
    request: Request,
    name: QueueName,
    viewer: OperatorViewer,
    session: SessionDep,
    controls: QueueControlsDep,
) -> Response:
    """The confirmation: the operator types the queue's name."""
    status = await controls.get_queue(session, name)
    await session.commit()
    return render(request, "purge.html", viewer, {"queue": status.name, "status": status})


@router.post("/queues/{name}/purge")
async def purge_queue(
    name: QueueName,
    _viewer: OperatorViewer,
    form: FormDep,
    session: SessionDep,
    controls: QueueControlsDep,
) -> Response:
    await controls.purge(session, name, confirm=form.get("confirm"))
    await session.commit()
    return back_to(HOME_PATH)


# --- Jobs -------------------------------------------------------------------------------


def _filters(
    viewer: Viewer,
    status: str | None,
    job_type: str | None,
    queue: str | None,
    tenant: str | None,
) -> JobFilters:
    if status and status not in JobStatus.__members__:
        raise ValidationFailed(f"status must be one of {', '.join(JobStatus)}")
    if job_type and job_type not in JOB_TYPES:
        raise ValidationFailed(f"type must be one of {', '.join(sorted(JOB_TYPES))}")
    return JobFilters(
        status=JobStatus(status) if status else None,
        job_type=job_type or None,
        queue=queue or None,
        tenant_id=(tenant or None) if viewer.operator else viewer.tenant_id,
    )


Filter = Annotated[str | None, Query(max_length=64)]


@router.get("/jobs")
async def jobs_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    submitter: SubmitterDep,
    status: Filter = None,
    job_type: Annotated[str | None, Query(alias="type", max_length=64)] = None,
    queue: Filter = None,
    tenant: Filter = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    filters = _filters(viewer, status, job_type, queue, tenant)
    jobs, next_cursor = await operations.list_jobs(
        session,
        tenant_id=filters.tenant_id,
        status=filters.status,
        job_type=filters.job_type,
        queue=filters.queue,
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    live = any(JobStatus(job.status) not in FINISHED_STATUSES for job in jobs)
    return render(
        request,
        "jobs.html",
        viewer,
        {
            "jobs": jobs,
            "filters": filters,
            "next_cursor": next_cursor,
            "statuses": list(JobStatus),
            "job_types": sorted(JOB_TYPES),
            "queues": list(submitter.topology.queues),
            "tenants": await dashboard_service.tenant_names(session, tenant_id=viewer.tenant_id),
            "refresh": REFRESH_SECONDS if live else None,
        },
    )


@router.get("/jobs/{job_id}")
async def job_page(
    request: Request, job_id: JobId, viewer: ViewerDep, session: SessionDep
) -> Response:
    job = await operations.get_job(session, job_id=job_id, tenant_id=viewer.tenant_id)
    status = JobStatus(job.status)
    return render(
        request,
        "job.html",
        viewer,
        {
            "job": job,
            "attempts": await operations.list_attempts(
                session, job_id=job.id, tenant_id=viewer.tenant_id
            ),
            "events": await operations.list_events(
                session, job_id=job.id, tenant_id=viewer.tenant_id
            ),
            "next_attempt_at": job.next_attempt_at,
            "can_retry": status in RETRYABLE,
            "can_cancel": status in CANCELLABLE,
            "refresh": None if status in FINISHED_STATUSES else REFRESH_SECONDS,
        },
    )


@router.post("/jobs/{job_id}/retry")
async def retry_job(
    job_id: JobId,
    viewer: ViewerDep,
    _form: FormDep,
    session: SessionDep,
    ops: JobOperationsDep,
) -> Response:
    outcome = await ops.retry(session, job_id=job_id, tenant_id=viewer.tenant_id)
    await session.commit()
    await ops.after_commit(outcome)
    return back_to(f"{HOME_PATH}/jobs/{job_id}")


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    job_id: JobId,
    viewer: ViewerDep,
    _form: FormDep,
    session: SessionDep,
    ops: JobOperationsDep,
) -> Response:
    await ops.cancel(session, job_id=job_id, tenant_id=viewer.tenant_id)
    await session.commit()
    return back_to(f"{HOME_PATH}/jobs/{job_id}")


# --- Dead letter queue ------------------------------------------------------------------


@router.get("/dlq")
async def dlq_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    submitter: SubmitterDep,
    queue: Filter = None,
    tenant: Filter = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    filters = _filters(viewer, JobStatus.dead.value, None, queue, tenant)
    jobs, next_cursor = await operations.list_jobs(
        session,
        tenant_id=filters.tenant_id,
        status=filters.status,
        job_type=filters.job_type,
        queue=filters.queue,
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    dead_letter_queues = [
        (name, settings.dead_letter_queue)
        for name, settings in submitter.topology.queues.items()
        if settings.dead_letter_queue
    ]
    return render(
        request,
        "dlq.html",
        viewer,
        {
            "jobs": jobs,
            "filters": filters,
            "next_cursor": next_cursor,
            "queues": list(submitter.topology.queues),
            "dead_letter_queues": dead_letter_queues,
            "tenants": await dashboard_service.tenant_names(session, tenant_id=viewer.tenant_id),
        },
    )


@router.post("/dlq/retry")
async def retry_selected(
    viewer: ViewerDep, form: FormDep, session: SessionDep, ops: JobOperationsDep
) -> Response:
    """Retry the selected dead jobs together: all are queued again, or none (409)."""
    job_ids = list(dict.fromkeys(form.getall("job_id")))
    if not job_ids:
        raise ValidationFailed("select at least one job to retry")
    if len(job_ids) > MAX_SELECTED:
        raise ValidationFailed(f"select at most {MAX_SELECTED} jobs at once")
    outcomes = [
        await ops.retry(session, job_id=job_id, tenant_id=viewer.tenant_id) for job_id in job_ids
    ]
    await session.commit()
    for outcome in outcomes:
        await ops.after_commit(outcome)
    return back_to(f"{HOME_PATH}/dlq")


def _dead_selection(viewer: Viewer, queue: str | None, tenant: str | None) -> RetrySelection:
    filters = _filters(viewer, JobStatus.dead.value, None, queue, tenant)
    return RetrySelection(
        status=JobStatus.dead,
        tenant_id=filters.tenant_id,
        queue=filters.queue,
        limit=MAX_BULK_RETRY,
    )


@router.get("/dlq/retry-all")
async def retry_all_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    ops: JobOperationsDep,
    queue: Filter = None,
    tenant: Filter = None,
) -> Response:
    """A dry run first: how many dead jobs the filter matches, then a confirmation form."""
    selection = _dead_selection(viewer, queue, tenant)
    outcome = await ops.retry_many(session, selection, dry_run=True)
    return render(
        request,
        "retry_all.html",
        viewer,
        {"selection": selection, "matched": outcome.matched, "limit": MAX_BULK_RETRY},
    )


@router.post("/dlq/retry-all")
async def retry_all(
    viewer: ViewerDep, form: FormDep, session: SessionDep, ops: JobOperationsDep
) -> Response:
    selection = _dead_selection(viewer, form.get("queue"), form.get("tenant"))
    outcome = await ops.retry_many(session, selection, dry_run=False)
    await session.commit()
    await ops.after_commit(outcome)
    return back_to(f"{HOME_PATH}/jobs?status=queued")


# --- Schedules --------------------------------------------------------------------------


@router.get("/schedules")
async def schedules_page(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    schedules = await scheduler_service.list_schedules(session, tenant_id=viewer.tenant_id)
    return render(request, "schedules.html", viewer, {"schedules": schedules})


async def _set_enabled(
    schedule_id: str, enabled: bool, viewer: Viewer, session: SessionDep, clock: ClockDep
) -> Response:
    schedule = await dashboard_service.get_schedule(
        session, tenant_id=viewer.tenant_id, schedule_id=schedule_id
    )
    await scheduler_service.update_schedule(
        session,
        tenant_id=schedule.tenant_id,
        schedule_id=schedule.id,
        changes=ScheduleUpdate(enabled=enabled),
        now=to_datetime(clock.now_ms()),
    )
    await session.commit()
    return back_to(f"{HOME_PATH}/schedules")


@router.post("/schedules/{schedule_id}/pause")
async def pause_schedule(
    schedule_id: ScheduleId, viewer: ViewerDep, _form: FormDep, session: SessionDep, clock: ClockDep
) -> Response:
    return await _set_enabled(schedule_id, False, viewer, session, clock)


@router.post("/schedules/{schedule_id}/resume")
async def resume_schedule(
    schedule_id: ScheduleId, viewer: ViewerDep, _form: FormDep, session: SessionDep, clock: ClockDep
) -> Response:
    return await _set_enabled(schedule_id, True, viewer, session, clock)


@router.post("/schedules/{schedule_id}/run")
async def run_schedule(
    schedule_id: ScheduleId,
    viewer: ViewerDep,
    _form: FormDep,
    gate: JobsGate,
    session: SessionDep,
    submitter: SubmitterDep,
) -> Response:
    """Fire the schedule now, through the tenant's admission like the API's run."""
    schedule = await dashboard_service.get_schedule(
        session, tenant_id=viewer.tenant_id, schedule_id=schedule_id
    )
    await gate.admit_jobs(
        schedule.tenant_id, [str(schedule.job["type"])], recipients([schedule.job])
    )
    job = await scheduler_service.run_now(session, submitter=submitter, schedule=schedule)
    await session.commit()
    return back_to(f"{HOME_PATH}/jobs/{job.id}")


# --- Breakers ---------------------------------------------------------------------------


@router.get("/breakers")
async def breakers_page(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    breakers = await dashboard_service.list_breakers(session, tenant_id=viewer.tenant_id)
    return render(request, "breakers.html", viewer, {"breakers": breakers})
