"""`jobgate keys`: a tenant's API keys."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import err, fail, run_admin
from app.cli.gateway import JsonOption, listing
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(help="A tenant's API keys.", no_args_is_help=True)


@app.command("create")
def keys_create(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="jobs:write, jobs:read or admin.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Create an API key (printed once, as JSON)."""
    from app.tenants import service as tenants_service
    from app.tenants.schemas import DEFAULT_SCOPES, Scope

    try:
        scopes = [Scope(s) for s in scope] if scope else list(DEFAULT_SCOPES)
    except ValueError as exc:
        fail(str(exc), code=2)

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        key, row = await tenants_service.create_api_key(
            session, tenant_id=tenant_id, scopes=scopes, name=name
        )
        return {"id": row.id, "prefix": row.prefix, "scopes": row.scopes.split(), "api_key": key}

    print(json.dumps(run_admin(work)))


@app.command("list")
def keys_list(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    prefix: Annotated[
        str | None, typer.Option(metavar="PREFIX", help="Only keys whose prefix starts so.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List a tenant's keys (never their secret part)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        rows = await tenants_service.list_api_keys(session, tenant_id=tenant_id, prefix=prefix)
        return [
            {
                "id": r.id,
                "prefix": r.prefix,
                "scopes": r.scopes.split(),
                "name": r.name,
                "revoked": r.revoked_at is not None,
            }
            for r in rows
        ]

    listing(run_admin(work), ["id", "prefix", "scopes", "name", "revoked"], as_json=as_json)


@app.command("revoke")
def keys_revoke(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
) -> None:
    """Revoke an API key (running gateways forget it within seconds)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        await tenants_service.revoke_api_key(session, tenant_id=tenant_id, key_id=key_id)

    run_admin(work)
    err.print(f"key {key_id} revoked")
