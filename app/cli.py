"""The `jobgate` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from app.core.config import DEV_SECRET_KEY, Settings, get_settings
from app.core.db import create_engine, create_sessionmaker
from app.core.security import SecretBox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.handlers.models import ShopConnection
    from app.scheduler.models import Schedule
    from app.tenants.models import OperatorKey

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
    from app.admission import email_policy
    from app.core.clock import utcnow
    from app.tenants import service as tenants_service

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            if await tenants_service.count_tenants(session):
                return None
            created = await tenants_service.create_tenant(
                session, name="dev", box=SecretBox(settings.secret_key)
            )
            # Development mails a local SMTP sink: the dev tenant may write to anyone.
            await email_policy.set_policy(
                session,
                tenant_id=created.tenant_id,
                allow_any=True,
                domains=[],
                rate=None,
                now=utcnow(),
            )
            await session.commit()
    finally:
        await engine.dispose()
    return created.model_dump()


def _serve(settings: Settings) -> None:
    from app.core import server

    # Bounded request heads, head deadline, keep-alive and connection cap (app/core/server.py).
    server.run("app.main:create_app", settings)


def _require_secret_key(settings: Settings) -> None:
    """Exit 2 with one line unless JOBGATE_SECRET_KEY was set (`jobgate dev` skips this)."""
    try:
        settings.require_secret_key()
    except ValueError as exc:
        # Plain text, not rich: one line whatever the terminal width.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@cli.command()
def serve() -> None:
    """Run the gateway (HTTP API, outbox relay, scheduler); needs JOBGATE_SECRET_KEY."""
    settings = get_settings()
    _require_secret_key(settings)
    _serve(settings)


@cli.command()
def dev() -> None:
    """Migrate, create a dev tenant on first run, and run everything on the embedded default."""
    # A shop on this machine is normal in development (the consumer child inherits it);
    # set JOBGATE_ALLOW_PRIVATE_SHOP_URLS=false to try the production behaviour.
    os.environ.setdefault("JOBGATE_ALLOW_PRIVATE_SHOP_URLS", "true")
    get_settings.cache_clear()
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
    if settings.secret_key == DEV_SECRET_KEY:
        err.print("[yellow]JOBGATE_SECRET_KEY is not set: stored secrets use the dev key[/yellow]")
    # The consumer runs as a child process and stops with the gateway (SIGTERM, then wait).
    consumer = _spawn_consumer()
    try:
        _serve(settings)
    finally:
        _stop_child(consumer, grace=settings.consumer_shutdown_grace_seconds + 10)


@cli.command()
def openapi() -> None:
    """Print the OpenAPI document as YAML (what openapi.yaml holds)."""
    from app.core.openapi import openapi_yaml
    from app.main import create_app

    sys.stdout.write(openapi_yaml(create_app(get_settings())))


@cli.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    host: Annotated[str | None, typer.Option(help="Interface (default JOBGATE_HOST).")] = None,
) -> None:
    """Migrate, then serve the Cloudflare-compatible Queues REST API on the local engine."""
    settings = get_settings()
    if not settings.cf_api_token:
        err.print("[red]error:[/red] set JOBGATE_CF_API_TOKEN (the one token the emulator accepts)")
        raise typer.Exit(2)
    asyncio.run(_upgrade(settings))
    bind = host or settings.host
    err.print(
        f"Cloudflare Queues emulator on http://{bind}:{port}/client/v4 "
        f"(account {settings.cf_account_id})"
    )
    from app.core import server

    server.run("app.emulator.app:create_app", settings, host=bind, port=port)


# --- shops: a tenant's PrestaShop connections and email sender (app/handlers) ---

shops_cli = typer.Typer(
    help="A tenant's PrestaShop shops (URL + Webservice key) and email sender.",
    no_args_is_help=True,
)
cli.add_typer(shops_cli, name="shops")
_T = TypeVar("_T")


def _shop_json(row: ShopConnection) -> dict[str, object]:
    # Never the key, not even encrypted: listings end up in tickets and chats.
    return {
        "site_id": row.site_id,
        "base_url": row.base_url,
        "default": row.is_default,
        "timezone": row.timezone,
        "ps_version": row.ps_version,
    }


@shops_cli.command("set")
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
            box=SecretBox(settings.secret_key),
            guard=ShopUrlGuard.from_settings(settings),
            timezone=timezone,
            make_default=make_default,
        )
        return _shop_json(row)

    print(json.dumps(_run_admin(work)))


@shops_cli.command("list")
def shops_list(tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")]) -> None:
    """List a tenant's shops as JSON (without keys)."""
    from app.handlers import service as handlers_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        rows = await handlers_service.list_shop_connections(session, tenant_id=tenant_id)
        return [_shop_json(row) for row in rows]

    print(json.dumps(_run_admin(work)))


@shops_cli.command("set-sender")
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

    _run_admin(work)
    err.print(f"sender of tenant {tenant_id} set to {address}")


# --- email-policy: where a tenant's send-email jobs may go, and how fast (app/admission) ---

email_policy_cli = typer.Typer(
    help="A tenant's email policy: allowed recipient domains (or any) and send rate.",
    no_args_is_help=True,
)
cli.add_typer(email_policy_cli, name="email-policy")


@email_policy_cli.command("set")
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

    if allow_any == (domains is not None):
        err.print("[red]error:[/red] give exactly one of --domains or --any")
        raise typer.Exit(2)
    names = [d for d in (domains or "").split(",") if d.strip()]

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        row = await email_policy.set_policy(
            session,
            tenant_id=tenant_id,
            allow_any=allow_any,
            domains=names,
            rate=rate,
            now=utcnow(),
        )
        return email_policy.public(tenant_id, row).model_dump(mode="json")

    print(json.dumps(_run_admin(work)))


@email_policy_cli.command("get")
def email_policy_get(tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")]) -> None:
    """Print the tenant's email policy as JSON (`configured: false`: no email allowed)."""
    from app.admission import email_policy
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        row = await email_policy.get_policy(session, tenant_id)
        return email_policy.public(tenant_id, row).model_dump(mode="json")

    print(json.dumps(_run_admin(work)))


def _spawn_consumer() -> subprocess.Popen[bytes]:
    # On Linux the child gets SIGTERM when this process dies, even by SIGKILL: no orphan.
    # `--dev`: the child of `jobgate dev` may use the development secret key, as its parent.
    return subprocess.Popen(
        [sys.executable, "-m", "app", "consume", "--dev"], preexec_fn=_die_with_parent
    )


def _die_with_parent() -> None:
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_child(child: subprocess.Popen[bytes], *, grace: float) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@cli.command()
def consume(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", help="A queue to consume (repeatable; default: all of them)."),
    ] = None,
    dev_mode: Annotated[bool, typer.Option("--dev", hidden=True)] = False,
) -> None:
    """Run the consumer: handlers for every job, retries, DLQ, breakers (until SIGTERM).

    Needs JOBGATE_SECRET_KEY (it decrypts shop keys), except as the child of `jobgate dev`.
    """
    import logging

    from app.bootstrap import build_runtime
    from app.consumer import service as consumer_service

    settings = get_settings()
    if not dev_mode:
        _require_secret_key(settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    async def run() -> None:
        runtime = build_runtime(settings)
        try:
            await consumer_service.serve(runtime, queues=queue or None)
        finally:
            await runtime.close()

    try:
        asyncio.run(run())
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


# --- keys and webhooks: credentials administration and signing (app/tenants, app/webhooks) ---

keys_cli = typer.Typer(help="A tenant's API keys.", no_args_is_help=True)
webhooks_cli = typer.Typer(
    help="Webhook secrets (rotation) and signing test deliveries.", no_args_is_help=True
)
cli.add_typer(keys_cli, name="keys")
cli.add_typer(webhooks_cli, name="webhooks")


def _run_admin(work: Callable[[AsyncSession, Settings], Awaitable[_T]]) -> _T:
    """Run one unit of admin work in a transaction that commits; AppError → exit 1."""
    from app.core.errors import AppError

    settings = get_settings()

    async def run() -> _T:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                result = await work(session, settings)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except AppError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc


@keys_cli.command("create")
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
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        key, row = await tenants_service.create_api_key(
            session, tenant_id=tenant_id, scopes=scopes, name=name
        )
        return {"id": row.id, "prefix": row.prefix, "scopes": row.scopes.split(), "api_key": key}

    print(json.dumps(_run_admin(work)))


@keys_cli.command("list")
def keys_list(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    prefix: Annotated[str | None, typer.Option(help="Only keys whose prefix starts so.")] = None,
) -> None:
    """List a tenant's keys (never their secret part), one JSON object per line."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
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

    for row in _run_admin(work):
        print(json.dumps(row))


@keys_cli.command("revoke")
def keys_revoke(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
) -> None:
    """Revoke an API key (running gateways forget it within seconds)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await tenants_service.revoke_api_key(session, tenant_id=tenant_id, key_id=key_id)

    _run_admin(work)
    err.print(f"key {key_id} revoked")


# --- operators: keys of the platform operator, who administers every tenant (app/tenants) ---

operators_cli = typer.Typer(
    help="Operator keys: admin rights over every tenant (tenant `admin` keys have one tenant).",
    no_args_is_help=True,
)
cli.add_typer(operators_cli, name="operators")


def _operator_json(row: OperatorKey) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


@operators_cli.command("create")
def operators_create(
    name: Annotated[str, typer.Argument(help="Who or what holds the key, e.g. 'alice'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Create an operator key (printed once; only a hash is stored)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        key, row = await tenants_service.create_operator_key(session, name=name)
        return {**_operator_json(row), "api_key": key}

    created = _run_admin(work)
    if as_json:
        print(json.dumps(created))
        return
    err.print(f"operator key [bold]{name}[/bold] created; store it now, it is not shown again:")
    print(created["api_key"])


@operators_cli.command("list")
def operators_list() -> None:
    """List operator keys (never their secret part), one JSON object per line."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        return [_operator_json(row) for row in await tenants_service.list_operator_keys(session)]

    for row in _run_admin(work):
        print(json.dumps(row))


@operators_cli.command("revoke")
def operators_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id or prefix (from `operators list`).")],
) -> None:
    """Revoke an operator key (running gateways forget it within seconds)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await tenants_service.revoke_operator_key(session, key_id=key_id)

    _run_admin(work)
    err.print(f"operator key {key_id} revoked")


@webhooks_cli.command("rotate")
def webhooks_rotate(tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")]) -> None:
    """Add a webhook secret; old ones stay valid until `webhooks revoke`. Prints JSON."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, settings: Settings) -> dict[str, str]:
        secret, row = await tenants_service.add_webhook_secret(
            session, tenant_id=tenant_id, box=SecretBox(settings.secret_key)
        )
        return {"id": row.id, "webhook_secret": secret}

    print(json.dumps(_run_admin(work)))


@webhooks_cli.command("secrets")
def webhooks_secrets(tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")]) -> None:
    """List a tenant's webhook secrets (ids and dates only)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        rows = await tenants_service.list_webhook_secrets(session, tenant_id=tenant_id)
        return [
            {
                "id": r.id,
                "created_at": r.created_at.isoformat(),
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            }
            for r in rows
        ]

    for row in _run_admin(work):
        print(json.dumps(row))


@webhooks_cli.command("revoke")
def webhooks_revoke(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    secret_id: Annotated[str, typer.Argument(help="The secret's id (from `webhooks secrets`).")],
) -> None:
    """Revoke an old webhook secret (the last active one cannot be revoked)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await tenants_service.revoke_webhook_secret(
            session, tenant_id=tenant_id, secret_id=secret_id
        )

    _run_admin(work)
    err.print(f"webhook secret {secret_id} revoked")


@webhooks_cli.command("sign")
def webhooks_sign(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    body: Annotated[str | None, typer.Option(help="The JSON body, exactly as sent.")] = None,
    file: Annotated[
        typer.FileBinaryRead | None, typer.Option(help="Read the body from a file ('-': stdin).")
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="JOBGATE_WEBHOOK_SECRET",
            help="whsec_... (default: the tenant's newest active secret from the database).",
        ),
    ] = None,
    message_id: Annotated[str | None, typer.Option("--id", help="webhook-id.")] = None,
    timestamp: Annotated[int | None, typer.Option(help="Unix seconds (default: now).")] = None,
    curl: Annotated[bool, typer.Option("--curl", help="Print a full curl command.")] = False,
    url: Annotated[
        str | None, typer.Option(help="Gateway base URL (default http://HOST:PORT).")
    ] = None,
) -> None:
    """Sign a body with Standard Webhooks: print the headers, or a ready curl command."""
    import secrets as random_secrets
    import shlex
    import time

    from app.webhooks.verifiers import sign_headers

    if (body is None) == (file is None):
        err.print("[red]error:[/red] give exactly one of --body and --file")
        raise typer.Exit(2)
    raw = body.encode() if body is not None else file.read() if file is not None else b""
    if secret is None:
        from app.tenants import service as tenants_service

        async def work(session: AsyncSession, settings: Settings) -> list[str]:
            return await tenants_service.active_webhook_secrets(
                session, tenant_id=tenant_id, box=SecretBox(settings.secret_key)
            )

        active = _run_admin(work)
        if not active:
            err.print(f"[red]error:[/red] tenant {tenant_id} has no webhook secret")
            raise typer.Exit(1)
        secret = active[0]
    try:
        headers = sign_headers(
            [secret],
            message_id or f"msg_{random_secrets.token_hex(12)}",
            timestamp if timestamp is not None else int(time.time()),
            raw,
        )
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if not curl:
        for name, value in headers.items():
            print(f"{name}: {value}")
        return
    settings = get_settings()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    parts = ["curl", "-sS", "-X", "POST", f"{base}/v1/webhooks/prestashop/{tenant_id}"]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-binary", raw.decode()]
    print(" ".join(shlex.quote(p) for p in parts))


# --- schedules: cron schedules that submit jobs (app/scheduler) ---

schedules_cli = typer.Typer(
    help="Cron schedules (UTC) that submit a tenant's job at every occurrence.",
    no_args_is_help=True,
)
cli.add_typer(schedules_cli, name="schedules")


def _schedule_json(row: Schedule) -> dict[str, object]:
    from app.scheduler.schemas import SchedulePublic

    public: dict[str, object] = SchedulePublic.model_validate(row).model_dump(mode="json")
    return {"tenant_id": row.tenant_id, **public}


@schedules_cli.command("create")
def schedules_create(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    name: Annotated[str, typer.Argument(help="A name, unique per tenant.")],
    cron: Annotated[str, typer.Option("--cron", help="Five fields in UTC, e.g. '0 */3 * * *'.")],
    job: Annotated[
        str,
        typer.Option(
            "--job", help='The job as JSON, e.g. \'{"type":"sync-orders","siteId":"s1"}\'.'
        ),
    ],
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it paused.")] = False,
) -> None:
    """Create a schedule and print it as JSON."""
    from pydantic import ValidationError

    from app.core.clock import utcnow
    from app.scheduler import service as scheduler_service
    from app.scheduler.schemas import ScheduleCreate
    from app.tenants import service as tenants_service

    try:
        body = ScheduleCreate.model_validate(
            {"name": name, "cron": cron, "job": json.loads(job), "enabled": not disabled}
        )
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/red] --job is not valid JSON: {exc}")
        raise typer.Exit(2) from exc
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            err.print(f"[red]error:[/red] {where}: {error['msg']}")
        raise typer.Exit(2) from exc

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, object]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        row = await scheduler_service.create_schedule(
            session, tenant_id=tenant_id, body=body, now=utcnow()
        )
        return _schedule_json(row)

    print(json.dumps(_run_admin(work)))


@schedules_cli.command("list")
def schedules_list(
    tenant_id: Annotated[
        str | None, typer.Argument(help="The tenant's id (default: every tenant).")
    ] = None,
) -> None:
    """List schedules, one JSON object per line."""
    from app.scheduler import service as scheduler_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        rows = await scheduler_service.list_schedules(session, tenant_id=tenant_id)
        return [_schedule_json(row) for row in rows]

    for row in _run_admin(work):
        print(json.dumps(row))


@schedules_cli.command("delete")
def schedules_delete(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id (from `schedules list`).")],
) -> None:
    """Delete a schedule (the jobs it submitted stay)."""
    from app.scheduler import service as scheduler_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await scheduler_service.delete_schedule(
            session, tenant_id=tenant_id, schedule_id=schedule_id
        )

    _run_admin(work)
    err.print(f"schedule {schedule_id} deleted")


def main() -> None:
    cli()
