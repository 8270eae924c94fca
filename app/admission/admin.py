"""Admin API of admission: a tenant's email policy (set by the operator, read by `TenantAdmin`)."""

from __future__ import annotations

from fastapi import APIRouter

from app.admission import email_policy
from app.admission.email_policy import EmailPolicyPublic, EmailPolicySet
from app.core.clock import to_datetime
from app.core.deps import ClockDep, SessionDep
from app.core.errors import problem_responses
from app.core.openapi import Tag
from app.tenants.deps import Operator, TenantAdmin, TenantId

router = APIRouter(prefix="/v1/admin", tags=[Tag.admin])


@router.put(
    "/tenants/{tenant_id}/email-policy",
    response_model=EmailPolicyPublic,
    responses=problem_responses(401, 403, 404, 422),
)
async def set_email_policy(
    tenant_id: TenantId,
    body: EmailPolicySet,
    _operator: Operator,
    session: SessionDep,
    clock: ClockDep,
) -> EmailPolicyPublic:
    """Where the tenant's `send-email` jobs may go (domains or any) and how many per period.

    Operator only: the policy protects the platform's shared sender from its tenants.
    """
    row = await email_policy.set_policy(
        session,
        tenant_id=tenant_id,
        allow_any=body.allow_any,
        domains=body.domains,
        rate=body.rate,
        now=to_datetime(clock.now_ms()),
    )
    await session.commit()
    return email_policy.public(tenant_id, row)


@router.get(
    "/tenants/{tenant_id}/email-policy",
    response_model=EmailPolicyPublic,
    responses=problem_responses(401, 403, 404),
)
async def get_email_policy(
    tenant_id: TenantId, _admin: TenantAdmin, session: SessionDep
) -> EmailPolicyPublic:
    """The tenant's email policy (`configured: false`: none set, so no email is accepted)."""
    return email_policy.public(tenant_id, await email_policy.get_policy(session, tenant_id))
