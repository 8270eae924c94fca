"""Per-tenant email policy: where `send-email` jobs may write to, and how many per period.

`send-email` goes out through the platform's SMTP relay, from the platform sender unless the
tenant set its own, so an unconfigured tenant (or a leaked `jobs:write` key) must not be able
to mail arbitrary addresses: a tenant without a policy may send no email at all. An operator
or the tenant's admin opens it with a list of recipient domains (exact match, lower case)
or an explicit "any", plus a send rate. Both are enforced when a job is accepted (POST
/v1/jobs, batches, schedules and their fires): a recipient outside the policy is a 422
naming the field, a tenant over its rate a 429 with Retry-After.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from limits import RateLimitItem, parse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.admission.config import check_limit
from app.admission.models import EmailPolicy
from app.core.errors import FieldError, NotFound, ValidationFailed
from app.core.schemas import RequestBody
from app.tenants.models import Tenant

DEFAULT_EMAIL_RATE = "100/hour"
MAX_DOMAINS = 100
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One `send-email` recipient and where it is in the request (for the 422)."""

    loc: tuple[str | int, ...]
    address: str


def recipients(jobs: Sequence[Any], *, loc: Sequence[str | int] = ()) -> list[Recipient]:
    """The recipients of the `send-email` jobs among `jobs` (models or stored dicts).

    With `loc`, each job's location is `loc + (index,)`; without, a single job's is `()`.
    """
    found: list[Recipient] = []
    for index, job in enumerate(jobs):
        fields: Mapping[str, Any] = job if isinstance(job, Mapping) else vars(job)
        if fields.get("type") == "send-email":
            where = (*loc, index) if loc else ()
            found.append(Recipient(loc=(*where, "to"), address=str(fields.get("to", ""))))
    return found


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def normalize_domain(value: str) -> str:
    """A recipient domain as stored: lower case, IDNA (punycode) for non-ASCII names."""
    domain = value.strip().lower().rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationFailed(f"{value!r} is not a domain name such as example.com") from None
    if not _DOMAIN.match(domain):
        raise ValidationFailed(f"{value!r} is not a domain name such as example.com")
    return domain


def _address_domain(address: str) -> str:
    domain = domain_of(address)
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


async def get_policy(session: AsyncSession, tenant_id: str) -> EmailPolicy | None:
    return await session.get(EmailPolicy, tenant_id)


def check_recipients(policy: EmailPolicy | None, found: Sequence[Recipient]) -> None:
    """Raise a 422 naming every recipient the policy does not allow."""
    if policy is not None and policy.allow_any:
        return
    allowed = set(policy.domains) if policy is not None else set()
    refused = [r for r in found if _address_domain(r.address) not in allowed]
    if not refused:
        return
    if policy is None:
        why = "this tenant has no email policy yet, so it may not send email"
    else:
        why = "the tenant's email policy does not allow this recipient domain"
    errors = [
        FieldError(loc=["body", *r.loc], msg=f"{why} ({domain_of(r.address)})", type="email_policy")
        for r in refused
    ]
    names = ", ".join(".".join(str(p) for p in r.loc) for r in refused)
    raise ValidationFailed(
        f"recipient not allowed: {names}: {why}; an operator or the tenant's admin sets it "
        "with PUT /v1/admin/tenants/{tenant_id}/email-policy",
        errors=errors,
    )


def rate_item(policy: EmailPolicy | None) -> RateLimitItem:
    return parse(policy.rate if policy is not None else DEFAULT_EMAIL_RATE)


async def set_policy(
    session: AsyncSession,
    *,
    tenant_id: str,
    allow_any: bool,
    domains: Sequence[str],
    rate: str | None,
    now: datetime,
) -> EmailPolicy:
    """Create or replace the tenant's policy: `allow_any`, or only `domains` (maybe none)."""
    if allow_any and domains:
        raise ValidationFailed("give either a list of domains or 'any', not both")
    if len(domains) > MAX_DOMAINS:
        raise ValidationFailed(f"at most {MAX_DOMAINS} domains")
    normalized = sorted({normalize_domain(d) for d in domains})
    rate = rate or DEFAULT_EMAIL_RATE
    try:
        check_limit(rate)
    except ValueError as exc:
        raise ValidationFailed(f"rate: {exc}") from None
    if await session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id} does not exist")
    row = await session.get(EmailPolicy, tenant_id)
    if row is None:
        row = EmailPolicy(
            tenant_id=tenant_id, allow_any=allow_any, domains=normalized, rate=rate, updated_at=now
        )
        session.add(row)
    else:
        row.allow_any, row.domains, row.rate, row.updated_at = allow_any, normalized, rate, now
    await session.flush()
    return row


class EmailPolicySet(RequestBody):
    """Open email for a tenant: recipient `domains`, or `allow_any`; and a send rate."""

    model_config = ConfigDict(extra="forbid")

    allow_any: bool = Field(
        default=False, description="Any recipient at all (then `domains` must be empty)."
    )
    domains: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=MAX_DOMAINS,
        description="Allowed recipient domains (exact match; an empty list allows none).",
        examples=[["example.com", "shop.example"]],
    )
    rate: str | None = Field(
        default=None,
        max_length=64,
        description=f"Emails accepted per period, e.g. '100/hour' (default {DEFAULT_EMAIL_RATE}).",
    )


class EmailPolicyPublic(BaseModel):
    """A tenant's email policy; `configured: false` is the default: no email allowed."""

    tenant_id: str
    configured: bool
    allow_any: bool
    domains: list[str]
    rate: str
    updated_at: datetime | None


def public(tenant_id: str, row: EmailPolicy | None) -> EmailPolicyPublic:
    if row is None:
        return EmailPolicyPublic(
            tenant_id=tenant_id,
            configured=False,
            allow_any=False,
            domains=[],
            rate=DEFAULT_EMAIL_RATE,
            updated_at=None,
        )
    return EmailPolicyPublic(
        tenant_id=tenant_id,
        configured=True,
        allow_any=row.allow_any,
        domains=list(row.domains),
        rate=row.rate,
        updated_at=row.updated_at,
    )
