"""`jobgate webhooks`: webhook secrets (rotation) and signing test deliveries."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import err, fail, load_settings, run_admin
from app.cli.gateway import JsonOption, listing
from app.core.security import SecretBox
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(
    help="Webhook secrets (rotation) and signing test deliveries.", no_args_is_help=True
)


@app.command("rotate")
def webhooks_rotate(tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")]) -> None:
    """Add a webhook secret; old ones stay valid until `webhooks revoke`. Prints JSON."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, settings: Settings) -> dict[str, str]:
        secret, row = await tenants_service.add_webhook_secret(
            session, tenant_id=tenant_id, box=SecretBox(settings.security.secret_key)
        )
        return {"id": row.id, "webhook_secret": secret}

    print(json.dumps(run_admin(work)))


@app.command("secrets")
def webhooks_secrets(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    as_json: JsonOption = False,
) -> None:
    """List a tenant's webhook secrets (ids and dates only)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, object]]:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        rows = await tenants_service.list_webhook_secrets(session, tenant_id=tenant_id)
        return [
            {
                "id": r.id,
                "created_at": r.created_at.isoformat(),
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            }
            for r in rows
        ]

    listing(run_admin(work), ["id", "created_at", "revoked_at"], as_json=as_json)


@app.command("revoke")
def webhooks_revoke(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.")],
    secret_id: Annotated[str, typer.Argument(help="The secret's id (from `webhooks secrets`).")],
) -> None:
    """Revoke an old webhook secret (the last active one cannot be revoked)."""
    from app.tenants import service as tenants_service

    async def work(session: AsyncSession, _settings: Settings) -> None:
        await tenants_service.get_tenant(session, tenant_id=tenant_id)
        await tenants_service.revoke_webhook_secret(
            session, tenant_id=tenant_id, secret_id=secret_id
        )

    run_admin(work)
    err.print(f"webhook secret {secret_id} revoked")


@app.command("sign")
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
        fail("give exactly one of --body and --file", code=2)
    raw = body.encode() if body is not None else file.read() if file is not None else b""
    if secret is None:
        from app.tenants import service as tenants_service

        async def work(session: AsyncSession, settings: Settings) -> list[str]:
            await tenants_service.get_tenant(session, tenant_id=tenant_id)
            return await tenants_service.active_webhook_secrets(
                session, tenant_id=tenant_id, box=SecretBox(settings.security.secret_key)
            )

        active = run_admin(work)
        if not active:
            fail(f"tenant {tenant_id} has no webhook secret")
        secret = active[0]
    try:
        headers = sign_headers(
            [secret],
            message_id or f"msg_{random_secrets.token_hex(12)}",
            timestamp if timestamp is not None else int(time.time()),
            raw,
        )
    except ValueError as exc:
        fail(str(exc), code=2)
    if not curl:
        for name, value in headers.items():
            print(f"{name}: {value}")
        return
    settings = load_settings()
    base = (url or f"http://{settings.http.host}:{settings.http.port}").rstrip("/")
    parts = ["curl", "-sS", "-X", "POST", f"{base}/v1/webhooks/prestashop/{tenant_id}"]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-binary", raw.decode()]
    print(" ".join(shlex.quote(p) for p in parts))
