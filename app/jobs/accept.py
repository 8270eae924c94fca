"""The accept fast path of `POST /v1/jobs` and `POST /v1/jobs/batch`.

Most submissions are the plain case: a cached API key with the `jobs:write` scope, a JSON
body that validates, no idempotency key, no e-mail recipients, and a tenant whose admission
state is in memory. `AcceptRoute` answers those without FastAPI's dependency tree, a
database session or ORM objects: the body is validated once from its bytes by the route's
own models, admission decides from memory, the shared submitter stores the jobs through the
group commit, and the response is serialized once.

Everything else (a missing or unknown credential, a body that does not validate, an
idempotency key, a tenant not seen lately...) is handed to the route's FastAPI handler, which
runs the full dependency tree: answers and errors stay exactly those of the documented route.
A refusal met on the fast path is raised as on the full one, through the same handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError

from app.admission.limiter import RouteClass
from app.admission.service import AdmissionControl
from app.core.security import api_key_prefix, hash_api_key
from app.core.storable import find_unstorable_json, is_json_media_type
from app.jobs.payloads import JobOptions, JobRequest
from app.jobs.schemas import JobBatchRequest, JobBatchResponse, JobPublic
from app.jobs.submitter import JobSubmitter, count_accepted
from app.observability import logs, tracing
from app.tenants.deps import Credentials
from app.tenants.schemas import Principal, Scope

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_single = TypeAdapter[JobOptions](JobRequest)
_public = TypeAdapter(JobPublic)
_batch_response = TypeAdapter(JobBatchResponse)


def trace_of(request: Request) -> dict[str, str] | None:
    # While tracing, the gateway's own span (child of the caller's): attempts hang under it.
    return tracing.job_trace(request.headers.get("traceparent"))


def _plain_writer(request: Request) -> Principal | None:
    """The caller when the request needs none of the full route's checks before its body:
    a JSON body, no query string, no idempotency header, no NUL in a header, and a cached
    API key with the `jobs:write` scope. None: let the full route decide."""
    if request.scope.get("query_string"):
        return None
    authorization = content_type = b""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"idempotency-key" or b"\x00" in value:
            return None
        elif name == b"content-type":
            content_type = value
    if not is_json_media_type(content_type.decode("latin-1")):
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or api_key_prefix(token) is None:
        return None
    credentials: Credentials = request.app.state.credentials
    principal = credentials.key_cache.get(hash_api_key(token))
    if principal is None or principal.operator or not principal.has(Scope.jobs_write):
        return None
    return principal


def _plain(jobs: Sequence[JobOptions]) -> bool:
    # Idempotency keys read the job table; recipients read the tenant's e-mail policy.
    return not any(job.idempotency_key or job.type == "send-email" for job in jobs)


async def _accept(request: Request, *, batch: bool) -> Response | None:
    principal = _plain_writer(request)
    if principal is None:
        return None
    logs.bind(tenant_id=principal.tenant_id or None)  # as the full route's authentication does
    body = await request.body()
    if find_unstorable_json(body, ["body"]):
        return None
    try:
        jobs = (
            JobBatchRequest.model_validate_json(body).jobs
            if batch
            else [_single.validate_json(body)]
        )
    except ValidationError:
        return None  # the full route answers with its own 422
    if not _plain(jobs):
        return None
    admission: AdmissionControl = request.app.state.admission
    route_class = RouteClass.batch if batch else RouteClass.jobs
    headers = await admission.admit_jobs_from_memory(
        principal.tenant_id, [job.type for job in jobs], route_class
    )
    if headers is None:
        return None
    submitter: JobSubmitter = request.app.state.submitter
    submitted = await submitter.submit_keyless(
        principal, jobs, trace=trace_of(request), batch=batch
    )
    count_accepted(submitted)
    if batch:
        content = _batch_response.dump_json(
            JobBatchResponse(jobs=[JobPublic.model_validate(item.fields) for item in submitted])
        )
    else:
        content = _public.dump_json(JobPublic.model_validate(submitted[0].fields))
    return Response(content, 202, headers, media_type="application/json")


# The submit routes' paths: the router's other routes keep FastAPI's handler untouched.
SINGLE_PATH = "/v1/jobs"
BATCH_PATH = "/v1/jobs/batch"


class AcceptRoute(APIRoute):
    """The jobs router's route class: `POST /v1/jobs` and `POST /v1/jobs/batch` try the fast
    path above first, then the route's FastAPI handler; every other route is FastAPI's."""

    def get_route_handler(self) -> Handler:
        full = super().get_route_handler()
        if self.methods != {"POST"} or self.path not in (SINGLE_PATH, BATCH_PATH):
            return full
        batch = self.path == BATCH_PATH

        async def handle(request: Request) -> Response:
            response = await _accept(request, batch=batch)
            return response if response is not None else await full(request)

        return handle
