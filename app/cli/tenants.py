"""`jobgate tenants`: create a tenant with its first credentials; list tenants."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
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
        print(json.dumps(created))
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
