"""`jobgate email-policy`: where a tenant's send-email jobs may go, and how fast."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import fail, run_admin
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(
    help="A tenant's email policy: allowed recipient domains (or any) and send rate.",
    no_args_is_help=True,
)


@app.command("set")
def email_policy_set(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    domains: Annotated[
        str | None,
        typer.Option("--domains", help="Allowed recipient domains, comma-separated."),
    ] = None,
    allow_any: Annotated[
        bool, typer.Option("--any", help="Allow any recipient (instead of --domains).")
    ] = False,
    rate: Annotated[
        str | None, typer.Option("--rate", help="Emails per period, e.g. 100/hour.")
    ] = None,
) -> None:
    """Set which recipients the tenant may email (--domains a.com,b.com or --any) and the rate."""
    from app.admission import email_policy
    from app.core.clock import utcnow
    from app.tenants import service as tenants_service

    if allow_any == (domains is not None):
        fail("give exactly one of --domains or --any", code=2)
    names = [d for d in (domains or "").split(",") if d.strip()]

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        row = await email_policy.set_policy(
            session,
            tenant_id=tenant_id,
            allow_any=allow_any,
            domains=names,
            rate=rate,
            now=utcnow(),
        )
        return email_policy.public(tenant_id, row).model_dump(mode="json")

    print(json.dumps(run_admin(work)))


@app.command("get")
def email_policy_get(tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")]) -> None:
    """Print the tenant's email policy as JSON (`configured: false`: no email allowed)."""
    from app.admission import email_policy
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        row = await email_policy.get_policy(session, tenant_id)
        return email_policy.public(tenant_id, row).model_dump(mode="json")

    print(json.dumps(run_admin(work)))
