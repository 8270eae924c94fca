"""The requests the clients make, built once for both the sync and the async client.

A `Call` is one route: method, path, query, body, headers and the pydantic model its answer
is read into. `RetryPolicy` says which answers are repeated and how long to wait first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from app.client.errors import retry_after_seconds
from app.jobs.payloads import JobOptions
from app.jobs.schemas import (
    AdminJobPage,
    AdminJobPublic,
    AttemptList,
    BulkRetryResult,
    JobBatchResponse,
    JobPage,
    JobPublic,
)

Model = TypeVar("Model", bound=BaseModel)

# A job to submit: a payload model (`SendEmailJob(...)`) or the JSON object itself.
JobInput = JobOptions | Mapping[str, Any]

RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """429 and 503 are repeated up to `max_attempts` tries in all, after the `Retry-After`
    the gateway names (else `backoff_s`, doubling); a wait over `max_delay_s` is not waited."""

    max_attempts: int = 3
    max_delay_s: float = 30.0
    backoff_s: float = 0.5

    def delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None to give the answer back."""
        if response.status_code not in RETRIED_STATUSES or attempt >= self.max_attempts:
            return None
        asked = retry_after_seconds(response)
        wait = asked if asked is not None else self.backoff_s * 2 ** (attempt - 1)
        return None if wait > self.max_delay_s else wait


@dataclass(frozen=True)
class Call(Generic[Model]):
    method: str
    path: str
    parse: Callable[[bytes], Model]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        query = {k: v for k, v in self.params.items() if v is not None}
        return http.build_request(
            self.method, self.path, params=query, json=self.body, headers=self.headers
        )

    def read(self, response: httpx.Response) -> Model:
        return self.parse(response.content)


def _operator_page(content: bytes) -> JobPage:
    """An operator's page as a `JobPage` whose jobs are `AdminJobPublic` (with `tenant_id`)."""
    page = AdminJobPage.model_validate_json(content)
    return JobPage.model_construct(data=list(page.data), next_cursor=page.next_cursor)


def job_body(job: JobInput) -> dict[str, Any]:
    if isinstance(job, BaseModel):
        return job.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dict(job)


class Routes:
    """The jobs routes of a tenant (`/v1/jobs`) or, for an operator key, of every tenant
    (`/v1/admin/jobs`, answers carry `tenant_id`)."""

    def __init__(self, *, operator: bool) -> None:
        self.operator = operator
        self.prefix = "/v1/admin/jobs" if operator else "/v1/jobs"
        model: type[JobPublic] = AdminJobPublic if operator else JobPublic
        self.parse_job: Callable[[bytes], JobPublic] = model.model_validate_json

    def submit(self, job: JobInput, idempotency_key: str | None) -> Call[JobPublic]:
        body = job_body(job)
        # The body's own key is the caller's choice too: a header would override it.
        key = idempotency_key or body.get("idempotency_key") or str(uuid.uuid4())
        headers = {"Idempotency-Key": key}
        return Call("POST", "/v1/jobs", JobPublic.model_validate_json, body=body, headers=headers)

    def batch(self, jobs: Sequence[JobInput]) -> Call[JobBatchResponse]:
        bodies = [job_body(job) for job in jobs]
        for body in bodies:
            body.setdefault("idempotency_key", str(uuid.uuid4()))
        parse = JobBatchResponse.model_validate_json
        return Call("POST", "/v1/jobs/batch", parse, body={"jobs": bodies})

    def get(self, job_id: str) -> Call[JobPublic]:
        return Call("GET", f"{self.prefix}/{job_id}", self.parse_job)

    def list(
        self,
        *,
        status: str | None,
        type: str | None,
        queue: str | None,
        tenant_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> Call[JobPage]:
        params: dict[str, Any] = {
            "status": status,
            "type": type,
            "queue": queue,
            "cursor": cursor,
            "limit": limit,
        }
        if self.operator:
            params["tenant_id"] = tenant_id
            return Call("GET", self.prefix, _operator_page, params=params)
        if tenant_id is not None:
            raise ValueError("tenant_id needs an operator key: a tenant's key sees its own jobs")
        return Call("GET", self.prefix, JobPage.model_validate_json, params=params)

    def attempts(self, job_id: str) -> Call[AttemptList]:
        return Call("GET", f"{self.prefix}/{job_id}/attempts", AttemptList.model_validate_json)

    def cancel(self, job_id: str) -> Call[JobPublic]:
        return Call("POST", f"{self.prefix}/{job_id}/cancel", self.parse_job)

    def retry(self, job_id: str) -> Call[JobPublic]:
        return Call("POST", f"{self.prefix}/{job_id}/retry", self.parse_job)

    def retry_matching(
        self, filters: Mapping[str, Any], *, dry_run: bool, limit: int | None
    ) -> Call[BulkRetryResult]:
        body = {k: v for k, v in filters.items() if v is not None}
        body["dry_run"] = dry_run
        if limit is not None:
            body["limit"] = limit
        return Call("POST", f"{self.prefix}/retry", BulkRetryResult.model_validate_json, body=body)
