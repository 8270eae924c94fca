"""The `jobgate` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from app.core.config import Settings, get_settings
from app.core.db import create_engine, create_sessionmaker
from app.core.security import SecretBox

cli = typer.Typer(help="jobgate: background jobs on Cloudflare Queues.", no_args_is_help=True)
db_cli = typer.Typer(help="Database migrations.", no_args_is_help=True)
tenants_cli = typer.Typer(help="Tenants and their credentials.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(tenants_cli, name="tenants")
err = Console(stderr=True)


async def _upgrade(settings: Settings) -> None:
    from app.core.migrations import upgrade

    engine = create_engine(settings)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (Alembic upgrade head)."""
    asyncio.run(_upgrade(get_settings()))
    err.print("[green]database is at the latest revision[/green]")


async def _create_tenant(settings: Settings, name: str) -> dict[str, str]:
    from app.tenants import service as tenants_service

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            created = await tenants_service.create_tenant(
                session, name=name, box=SecretBox(settings.secret_key)
            )
            await session.commit()
    finally:
        await engine.dispose()
    return created.model_dump()


@tenants_cli.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="A unique tenant name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Create a tenant with an API key and a webhook secret (both shown only now)."""
    from app.core.errors import AppError

    try:
        created = asyncio.run(_create_tenant(get_settings(), name))
    except AppError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps(created))
        return
    err.print(f"tenant [bold]{name}[/bold] created; store these now, they are not shown again:")
    for key, value in created.items():
        print(f"{key}: {value}")


async def _ensure_dev_tenant(settings: Settings) -> dict[str, str] | None:
    from app.tenants import service as tenants_service

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            if await tenants_service.count_tenants(session):
                return None
            created = await tenants_service.create_tenant(
                session, name="dev", box=SecretBox(settings.secret_key)
            )
            await session.commit()
    finally:
        await engine.dispose()
    return created.model_dump()


def _serve(settings: Settings) -> None:
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@cli.command()
def serve() -> None:
    """Run the gateway (HTTP API)."""
    _serve(get_settings())


@cli.command()
def dev() -> None:
    """Migrate, create a dev tenant on first run, and run everything on the embedded default."""
    settings = get_settings()
    asyncio.run(_upgrade(settings))
    created = asyncio.run(_ensure_dev_tenant(settings))
    if created:
        err.print("[bold green]dev tenant created[/bold green]; its API key is shown only once:")
        err.print(f"  export JOBGATE_KEY={created['api_key']}")
        err.print(f"  tenant_id={created['tenant_id']} webhook_secret={created['webhook_secret']}")
    else:
        err.print("tenants exist already; make another key with `jobgate tenants create NAME`")
    err.print(f"gateway on http://{settings.host}:{settings.port} (docs at /docs)")
    _serve(settings)


@cli.command()
def openapi() -> None:
    """Print the OpenAPI document as YAML (what openapi.yaml holds)."""
    from app.core.openapi import openapi_yaml
    from app.main import create_app

    sys.stdout.write(openapi_yaml(create_app(get_settings())))


def main() -> None:
    cli()
