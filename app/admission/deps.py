"""Admission as request dependencies.

`AdmissionGate(route_class)` gives a route a `Gate` bound to the request; the route calls
it right after authentication and body validation, before anything is stored:

    async def submit_job(job: JobRequest, principal: JobsWriter, gate: JobsGate, ...):
        await gate.admit_jobs(principal.tenant_id, [job.type])

Admitted responses get the rate-limit headers; refusals raise (429/503 + Retry-After).
Read routes use `dependencies=[Depends(admit_read)]`. Webhook routes (no bearer principal)
use `WebhooksGate` and `await gate.admit_webhook(tenant_id, job_types)`, which returns the
delay to store the jobs with while a circuit breaker is open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.admission.email_policy import Recipient
from app.admission.limiter import RouteClass
from app.admission.service import AdmissionControl
from app.core.deps import SessionDep
from app.tenants.deps import JobsReader


def get_admission(request: Request) -> AdmissionControl:
    admission: AdmissionControl = request.app.state.admission
    return admission


class Gate:
    """Admission of one request of one route class; headers go on the eventual response."""

    def __init__(
        self,
        admission: AdmissionControl,
        route_class: RouteClass,
        session: AsyncSession,
        response: Response,
    ) -> None:
        self.admission = admission
        self.route_class = route_class
        self._session = session
        self._response = response

    async def admit(self, tenant_id: str) -> None:
        """Charge one unit of the route class (reads)."""
        self._response.headers.update(
            await self.admission.admit_request(self._session, tenant_id, self.route_class)
        )

    async def admit_jobs(
        self,
        tenant_id: str,
        job_types: Sequence[str],
        recipients: Sequence[Recipient] = (),
    ) -> None:
        """Admit these jobs (one entry per job) or raise a refusal; `recipients` are the
        send-email jobs' recipients, checked against the tenant's email policy and rate."""
        self._response.headers.update(
            await self.admission.admit_jobs(
                self._session, tenant_id, job_types, self.route_class, recipients
            )
        )

    async def admit_webhook(self, tenant_id: str, job_types: Sequence[str]) -> int:
        """Admit a webhook delivery; returns the delay (s) to store its jobs with (0: none)."""
        admitted = await self.admission.admit_webhook(self._session, tenant_id, job_types)
        self._response.headers.update(admitted.headers)
        return admitted.delay_seconds


class AdmissionGate:
    """Dependency: the `Gate` of `route_class` for this request."""

    def __init__(self, route_class: RouteClass) -> None:
        self.route_class = route_class

    async def __call__(self, request: Request, session: SessionDep, response: Response) -> Gate:
        return Gate(get_admission(request), self.route_class, session, response)


JobsGate = Annotated[Gate, Depends(AdmissionGate(RouteClass.jobs))]
BatchGate = Annotated[Gate, Depends(AdmissionGate(RouteClass.batch))]
ReadsGate = Annotated[Gate, Depends(AdmissionGate(RouteClass.reads))]
WebhooksGate = Annotated[Gate, Depends(AdmissionGate(RouteClass.webhooks))]


async def admit_read(principal: JobsReader, gate: ReadsGate) -> None:
    """Charge the caller's read budget (after authentication)."""
    await gate.admit(principal.tenant_id)
