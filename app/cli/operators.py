"""`jobgate operators`: keys of the platform operator, who administers every tenant."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import err, run_admin
from app.cli.gateway import JsonOption, listing
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.tenants.models import OperatorKey

app = typer.Typer(
    help="Operator keys: admin rights over every tenant (tenant `admin` keys have one tenant).",
    no_args_is_help=True,
)


def _operator_json(row: OperatorKey) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


@app.command("create")
def operators_create(
    name: Annotated[str, typer.Argument(help="Who or what holds the key, e.g. 'alice'.")],
    as_json: JsonOption = False,
) -> None:
    """Create an operator key (printed once; only a hash is stored)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        key, row = await tenants_service.create_operator_key(session, name=name)
        return {**_operator_json(row), "api_key": key}

    created = run_admin(work)
    if as_json:
        print(json.dumps(created))
        return
    err.print(f"operator key [bold]{name}[/bold] created; store it now, it is not shown again:")
    print(created["api_key"])


@app.command("list")
def operators_list(as_json: JsonOption = False) -> None:
    """List operator keys (never their secret part)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        return [_operator_json(row) for row in await tenants_service.list_operator_keys(session)]

    columns = ["id", "name", "prefix", "created_at", "revoked_at"]
    listing(run_admin(work), columns, as_json=as_json)


@app.command("revoke")
def operators_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id or prefix (from `operators list`).")],
) -> None:
    """Revoke an operator key (running gateways forget it within seconds)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await tenants_service.revoke_operator_key(session, key_id=key_id)

    run_admin(work)
    err.print(f"operator key {key_id} revoked")
