"""`jobgate tenants`: create a tenant with its first credentials; list and show tenants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import err, run_admin
from app.cli.gateway import JsonOption, print_json, table
from app.core.security import SecretBox
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(help="Tenants and their credentials.", no_args_is_help=True)


@app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="A unique tenant name.")],
    as_json: JsonOption = False,
) -> None:
    """Create a tenant with an API key and a webhook secret (both shown only now)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, settings: Settings) -> dict[str, str]:
        created = await tenants_service.create_tenant(
            session, name=name, box=SecretBox(settings.security.secret_key)
        )
        return created.model_dump()

    created = run_admin(work)
    if as_json:
        print_json(created)
        return
    err.print(f"tenant [bold]{name}[/bold] created; store these now, they are not shown again:")
    for key, value in created.items():
        print(f"{key}: {value}")


@app.command("list")
def tenants_list(as_json: JsonOption = False) -> None:
    """Every tenant, oldest first: id, name, created, active API keys."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        keys = await tenants_service.active_key_counts(session)
        return [
            {
                "id": tenant.id,
                "name": tenant.name,
                "created_at": tenant.created_at.isoformat(),
                "api_keys": keys.get(tenant.id, 0),
            }
            for tenant in await tenants_service.list_tenants(session)
        ]

    rows = run_admin(work)
    if as_json:
        for row in rows:
            print_json(row)
        return
    table(
        None,
        ["id", "name", "created", "keys"],
        ([r["id"], r["name"], r["created_at"], r["api_keys"]] for r in rows),
    )


@app.command("show")
def tenants_show(
    ref: Annotated[str, typer.Argument(metavar="NAME|ID", help="The tenant's name or id.")],
    as_json: JsonOption = False,
) -> None:
    """One tenant: id, name, created, API keys, shops and email policy (no secrets)."""
    from app.admission import email_policy
    from app.handlers import service as handlers_service
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        tenant = await tenants_service.find_tenant(session, ref=ref)
        keys = await tenants_service.list_api_keys(session, tenant_id=tenant.id)
        shops = await handlers_service.list_shop_connections(session, tenant_id=tenant.id)
        policy = email_policy.public(tenant.id, await email_policy.get_policy(session, tenant.id))
        return {
            "id": tenant.id,
            "name": tenant.name,
            "created_at": tenant.created_at.isoformat(),
            "api_keys": [
                {"prefix": k.prefix, "scopes": k.scopes.split(), "name": k.name}
                for k in keys
                if k.revoked_at is None
            ],
            "shops": [s.site_id for s in shops],
            "email_policy": policy.model_dump(mode="json", exclude={"tenant_id"}),
        }

    shown = run_admin(work)
    if as_json:
        print_json(shown)
        return
    table(
        None,
        ["field", "value"],
        [
            ["id", shown["id"]],
            ["name", shown["name"]],
            ["created", shown["created_at"]],
            ["keys", ", ".join(k["prefix"] for k in shown["api_keys"]) or "none"],
            ["shops", ", ".join(shown["shops"]) or "none"],
            ["email policy", _policy_summary(shown["email_policy"])],
        ],
    )


def _policy_summary(policy: dict[str, Any]) -> str:
    if not policy["configured"]:
        return "not configured (no email allowed)"
    to = "anyone" if policy["allow_any"] else ", ".join(policy["domains"]) or "nobody"
    return f"to {to}, at most {policy['rate']}"
