"""`JobgateClient` (sync) and `AsyncJobgateClient` (async): the jobs API over httpx, typed
with the gateway's own pydantic schemas.

Both send `Authorization: Bearer <key>`, give every submission an `Idempotency-Key` (the
caller's, else the body's, else a random one), repeat 429 and 503 answers after the
`Retry-After` they name (a bounded number of times, see `RetryPolicy`) and raise a
`ProblemError` subclass carrying the problem+json of any other error answer. A key that
starts with `jgo_` (or `operator=True`) reads and changes every tenant's jobs through the
operator routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from app.client.calls import Call, JobInput, Model, RetryPolicy, Routes
from app.client.errors import GatewayUnreachable, problem_error
from app.core.security import OPERATOR_KEY_PREFIX
from app.jobs.schemas import AttemptList, BulkRetryResult, JobBatchResponse, JobPage, JobPublic

DEFAULT_TIMEOUT_S = 30.0
PAGE_SIZE = 100


@dataclass(frozen=True)
class Submitted:
    """A submitted job and whether this call created it (False: its idempotency key's
    original, answered again)."""

    job: JobPublic
    created: bool


def _batch_outcome(status: int, jobs: list[JobPublic]) -> list[Submitted]:
    """200: every job a repeat. 202: the gateway stamps the jobs one request creates with
    that request's time, later than any original a repeated key answers with."""
    if status == 200 or not jobs:
        return [Submitted(job, False) for job in jobs]
    newest = max(job.created_at for job in jobs)
    return [Submitted(job, job.created_at == newest) for job in jobs]


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        operator: bool = False,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is required")
        self.base_url = base_url.rstrip("/")
        self.operator = operator or api_key.startswith(OPERATOR_KEY_PREFIX)
        self.retry_policy = retry or RetryPolicy()
        self._routes = Routes(operator=self.operator)
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def _unreachable(self, exc: httpx.HTTPError) -> GatewayUnreachable:
        return GatewayUnreachable(
            f"cannot reach the gateway at {self.base_url}: {type(exc).__name__}: {exc}"
        )


class JobgateClient(_Base):
    """The jobs API, blocking. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        operator: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, operator=operator, retry=retry)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def _exchange(self, call: Call[Model]) -> httpx.Response:
        request = call.request(self._http)
        attempt = 1
        while True:
            try:
                response = self._http.send(request)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            wait = self.retry_policy.delay(response, attempt)
            if wait is None:
                break
            time.sleep(wait)
            attempt += 1
        if not response.is_success:
            raise problem_error(response)
        return response

    def _send(self, call: Call[Model]) -> Model:
        return call.read(self._exchange(call))

    def submit(self, job: JobInput, *, idempotency_key: str | None = None) -> JobPublic:
        """Submit one job; a repeat with the same key answers the original job."""
        return self._send(self._routes.submit(job, idempotency_key))

    def batch(self, jobs: Sequence[JobInput]) -> list[JobPublic]:
        """Submit 1..100 jobs atomically (all stored or none)."""
        return self._send(self._routes.batch(jobs)).jobs

    def submit_outcome(self, job: JobInput, *, idempotency_key: str | None = None) -> Submitted:
        """`submit`, saying whether the job is new (202) or its key's original (200)."""
        call = self._routes.submit(job, idempotency_key)
        response = self._exchange(call)
        return Submitted(call.read(response), response.status_code != 200)

    def batch_outcome(self, jobs: Sequence[JobInput]) -> list[Submitted]:
        """`batch`, saying for each job whether it is new or its key's original."""
        call: Call[JobBatchResponse] = self._routes.batch(jobs)
        response = self._exchange(call)
        return _batch_outcome(response.status_code, call.read(response).jobs)

    def get(self, job_id: str) -> JobPublic:
        return self._send(self._routes.get(job_id))

    def list(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        tenant_id: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> JobPage:
        """One page of jobs, newest first; pass `next_cursor` back as `cursor`."""
        return self._send(
            self._routes.list(
                status=status,
                type=type,
                queue=queue,
                tenant_id=tenant_id,
                cursor=cursor,
                limit=limit,
            )
        )

    def iter_jobs(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[JobPublic]:
        """Every matching job (at most `limit`), page after page."""
        cursor: str | None = None
        seen = 0
        while limit is None or seen < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - seen)
            page = self.list(
                status=status,
                type=type,
                queue=queue,
                tenant_id=tenant_id,
                cursor=cursor,
                limit=size,
            )
            for job in page.data:
                yield job
                seen += 1
            cursor = page.next_cursor
            if not cursor:
                return

    def attempts(self, job_id: str) -> AttemptList:
        return self._send(self._routes.attempts(job_id))

    def cancel(self, job_id: str) -> JobPublic:
        return self._send(self._routes.cancel(job_id))

    def retry(self, job_id: str) -> JobPublic:
        return self._send(self._routes.retry(job_id))

    def retry_matching(
        self, filters: Mapping[str, Any], *, dry_run: bool, limit: int | None = None
    ) -> BulkRetryResult:
        """Bulk retry of dead or failed jobs (`filters`: status, type, queue, ...)."""
        return self._send(self._routes.retry_matching(filters, dry_run=dry_run, limit=limit))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncJobgateClient(_Base):
    """The jobs API for asyncio. Use as an async context manager, or await `aclose()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        operator: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, operator=operator, retry=retry)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def _exchange(self, call: Call[Model]) -> httpx.Response:
        request = call.request(self._http)
        attempt = 1
        while True:
            try:
                response = await self._http.send(request)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            wait = self.retry_policy.delay(response, attempt)
            if wait is None:
                break
            await asyncio.sleep(wait)
            attempt += 1
        if not response.is_success:
            raise problem_error(response)
        return response

    async def _send(self, call: Call[Model]) -> Model:
        return call.read(await self._exchange(call))

    async def submit(self, job: JobInput, *, idempotency_key: str | None = None) -> JobPublic:
        return await self._send(self._routes.submit(job, idempotency_key))

    async def batch(self, jobs: Sequence[JobInput]) -> list[JobPublic]:
        return (await self._send(self._routes.batch(jobs))).jobs

    async def submit_outcome(
        self, job: JobInput, *, idempotency_key: str | None = None
    ) -> Submitted:
        call = self._routes.submit(job, idempotency_key)
        response = await self._exchange(call)
        return Submitted(call.read(response), response.status_code != 200)

    async def batch_outcome(self, jobs: Sequence[JobInput]) -> list[Submitted]:
        call: Call[JobBatchResponse] = self._routes.batch(jobs)
        response = await self._exchange(call)
        return _batch_outcome(response.status_code, call.read(response).jobs)

    async def get(self, job_id: str) -> JobPublic:
        return await self._send(self._routes.get(job_id))

    async def list(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        tenant_id: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> JobPage:
        return await self._send(
            self._routes.list(
                status=status,
                type=type,
                queue=queue,
                tenant_id=tenant_id,
                cursor=cursor,
                limit=limit,
            )
        )

    async def iter_jobs(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        tenant_id: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[JobPublic]:
        cursor: str | None = None
        seen = 0
        while limit is None or seen < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - seen)
            page = await self.list(
                status=status,
                type=type,
                queue=queue,
                tenant_id=tenant_id,
                cursor=cursor,
                limit=size,
            )
            for job in page.data:
                yield job
                seen += 1
            cursor = page.next_cursor
            if not cursor:
                return

    async def attempts(self, job_id: str) -> AttemptList:
        return await self._send(self._routes.attempts(job_id))

    async def cancel(self, job_id: str) -> JobPublic:
        return await self._send(self._routes.cancel(job_id))

    async def retry(self, job_id: str) -> JobPublic:
        return await self._send(self._routes.retry(job_id))

    async def retry_matching(
        self, filters: Mapping[str, Any], *, dry_run: bool, limit: int | None = None
    ) -> BulkRetryResult:
        return await self._send(self._routes.retry_matching(filters, dry_run=dry_run, limit=limit))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
