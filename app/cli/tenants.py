"""`jobgate tenants`: create a tenant with its first credentials."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import err, run_admin
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
