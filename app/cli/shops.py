"""`jobgate shops`: a tenant's PrestaShop connections and email sender (app/handlers)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import err, run_admin
from app.cli.gateway import JsonOption, listing
from app.core.security import SecretBox
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.handlers.models import ShopConnection

app = typer.Typer(
    help="A tenant's PrestaShop shops (URL + Webservice key) and email sender.",
    no_args_is_help=True,
)


def _shop_json(row: ShopConnection) -> dict[str, object]:
    # Never the key, not even encrypted: listings end up in tickets and chats.
    return {
        "site_id": row.site_id,
        "base_url": row.base_url,
        "default": row.is_default,
        "timezone": row.timezone,
        "ps_version": row.ps_version,
    }


@app.command("set")
def shops_set(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    url: Annotated[str, typer.Option("--url", help="Shop base URL, e.g. https://shop.example")],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            envvar="JOBGATE_SHOP_KEY",
            prompt="Webservice key",
            hide_input=True,
            help="The 32-character Webservice key (prompted when omitted; or JOBGATE_SHOP_KEY).",
        ),
    ],
    site_id: Annotated[str, typer.Option("--site-id", help="The shop's site id.")] = "default",
    timezone: Annotated[str, typer.Option("--timezone", help="The shop's time zone.")] = "UTC",
    make_default: Annotated[
        bool, typer.Option("--default", help="Make it the tenant's default shop.")
    ] = False,
) -> None:
    """Add or replace a tenant's shop; the key is stored encrypted and never printed.

    The URL's host must resolve to public addresses only (JOBGATE_ALLOW_PRIVATE_SHOP_URLS
    lifts that for development) and, in production, use https."""
    from app.handlers import service as handlers_service
    from app.handlers.shop_url import ShopUrlGuard

    async def work(session: AsyncSession, settings: Settings) -> dict[str, object]:
        row = await handlers_service.set_shop_connection(
            session,
            tenant_id=tenant_id,
            site_id=site_id,
            base_url=url,
            key=key,
            box=SecretBox(settings.security.secret_key),
            guard=ShopUrlGuard.from_settings(settings.prestashop, settings.environment),
            timezone=timezone,
            make_default=make_default,
        )
        return _shop_json(row)

    print(json.dumps(run_admin(work)))


@app.command("list")
def shops_list(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    as_json: JsonOption = False,
) -> None:
    """List a tenant's shops (without keys)."""
    from app.handlers import service as handlers_service
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        rows = await handlers_service.list_shop_connections(session, tenant_id=tenant_id)
        return [_shop_json(row) for row in rows]

    columns = ["site_id", "base_url", "default", "timezone", "ps_version"]
    listing(run_admin(work), columns, as_json=as_json)


@app.command("set-sender")
def shops_set_sender(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    address: Annotated[str, typer.Argument(help="From address, e.g. shop@example.com")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
) -> None:
    """Set the From address of the tenant's emails."""
    from app.handlers import service as handlers_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await handlers_service.set_email_sender(
            session, tenant_id=tenant_id, address=address, display_name=name
        )

    run_admin(work)
    err.print(f"sender of tenant {tenant_id} set to {address}")
