"""`jobgate serve`, `dev`, `consume` and `emulator`: the long-running processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.common import err, fail, load_settings, run_admin
from app.cli.db import upgrade_database
from app.core.config import DEV_SECRET_KEY
from app.core.security import SecretBox
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.observability.logs import LogFormat


def _observe(settings: Settings, *, service: str, default_format: LogFormat = "json") -> None:
    """Logs in the configured format (else `default_format`) and level; traces if enabled."""
    from app.observability import tracing
    from app.observability.logs import configure_logging

    fmt = settings.observability.log_format or default_format
    configure_logging(settings.http.log_level, fmt)
    if settings.observability.otel_enabled:
        tracing.enable(service_name=service)


def _serve(settings: Settings) -> None:
    from app.core import server

    _observe(settings, service="jobgate-gateway")
    # Bounded request heads, head deadline, keep-alive and connection cap (app/core/server.py).
    server.run("app.main:create_app", settings.http)


def _dev_environment(settings: Settings) -> None:
    """`jobgate dev` runs two processes for one terminal: text logs unless JOBGATE_LOG_FORMAT
    says otherwise, and the consumer child's metrics on a loopback port that the gateway's
    /metrics appends (so `curl localhost:8000/metrics` shows both)."""
    os.environ.setdefault("JOBGATE_LOG_FORMAT", "text")
    port = settings.observability.consumer_metrics_port
    if port is None:
        port = _free_port()
        os.environ["JOBGATE_CONSUMER_METRICS_PORT"] = str(port)
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    os.environ.setdefault("JOBGATE_METRICS_INCLUDE_URL", f"http://{host}:{port}/metrics")


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _require_secret_key(settings: Settings) -> None:
    """Exit 2 with one line unless JOBGATE_SECRET_KEY was set (`jobgate dev` skips this)."""
    try:
        settings.security.require_secret_key()
    except ValueError as exc:
        fail(str(exc), code=2)


HostOption = Annotated[
    str | None,
    typer.Option(metavar="HOST", help="Interface to listen on (default JOBGATE_HOST)."),
]
PortOption = Annotated[
    int | None,
    typer.Option(metavar="PORT", min=1, max=65_535, help="Port (default JOBGATE_PORT)."),
]


def _bind(host: str | None, port: int | None) -> None:
    """Command-line --host/--port win over the environment: written back to it so that
    settings loaded later (and child processes) see the same address."""
    if host is not None:
        os.environ["JOBGATE_HOST"] = host
    if port is not None:
        os.environ["JOBGATE_PORT"] = str(port)
    get_settings.cache_clear()


def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Run the gateway (HTTP API, outbox relay, scheduler); needs JOBGATE_SECRET_KEY."""
    _bind(host, port)
    settings = load_settings()
    _require_secret_key(settings)
    _serve(settings)


async def _ensure_dev_tenant(session: AsyncSession, settings: Settings) -> dict[str, str] | None:
    from app.admission import email_policy
    from app.core.clock import utcnow
    from app.tenants import service as tenants_service

    if await tenants_service.count_tenants(session):
        return None
    created = await tenants_service.create_tenant(
        session, name="dev", box=SecretBox(settings.security.secret_key)
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
    return created.model_dump()


def dev(host: HostOption = None, port: PortOption = None) -> None:
    """Migrate, create a dev tenant on first run, and run everything on the embedded default."""
    _bind(host, port)
    settings = load_settings()
    upgrade_database(settings)
    created = run_admin(_ensure_dev_tenant, settings)
    if created:
        err.print("[bold green]dev tenant created[/bold green]; its API key is shown only once:")
        err.print(f"  export JOBGATE_KEY={created['api_key']}")
        err.print(f"  tenant_id={created['tenant_id']} webhook_secret={created['webhook_secret']}")
    else:
        err.print(
            "tenants exist already: `jobgate tenants list` finds them, "
            "`jobgate keys create TENANT_ID` makes another key"
        )
    err.print(f"gateway on http://{settings.http.host}:{settings.http.port} (docs at /docs)")
    if settings.security.secret_key == DEV_SECRET_KEY:
        err.print("[yellow]JOBGATE_SECRET_KEY is not set: stored secrets use the dev key[/yellow]")
    _dev_environment(settings)
    get_settings.cache_clear()
    settings = load_settings()
    # The consumer runs as a child process and stops with the gateway (SIGTERM, then wait).
    consumer = _spawn_consumer()
    try:
        _serve(settings)
    finally:
        _stop_child(consumer, grace=settings.consumer.shutdown_grace_seconds + 10)


def emulator(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    host: Annotated[str | None, typer.Option(help="Interface (default JOBGATE_HOST).")] = None,
) -> None:
    """Migrate, then serve the Cloudflare-compatible Queues REST API on the local engine."""
    settings = load_settings()
    if not settings.cloudflare.api_token:
        fail("set JOBGATE_CF_API_TOKEN (the one token the emulator accepts)", code=2)
    upgrade_database(settings)
    bind = host or settings.http.host
    err.print(
        f"Cloudflare Queues emulator on http://{bind}:{port}/client/v4 "
        f"(account {settings.cloudflare.account_id})"
    )
    from app.core import server

    _observe(settings, service="jobgate-emulator")
    server.run("app.emulator.app:create_app", settings.http, host=bind, port=port)


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


def consume(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", help="A queue to consume (repeatable; default: all of them)."),
    ] = None,
    dev_mode: Annotated[bool, typer.Option("--dev", hidden=True)] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65_535,
            help="Serve Prometheus metrics on this port (JOBGATE_CONSUMER_METRICS_PORT).",
        ),
    ] = None,
) -> None:
    """Run the consumer: handlers for every job, retries, DLQ, breakers (until SIGTERM).

    Needs JOBGATE_SECRET_KEY (it decrypts shop keys), except as the child of `jobgate dev`.
    """
    import uvloop

    from app.bootstrap import build_runtime
    from app.consumer import service as consumer_service
    from app.core.db import create_engine
    from app.core.heap import settle_heap

    settings = load_settings()
    if not dev_mode:
        _require_secret_key(settings)
    if metrics_port is not None:
        settings = settings.updated(observability={"consumer_metrics_port": metrics_port})
    _observe(settings, service="jobgate-consumer")

    async def run() -> None:
        # Its lease, handler and settlement transactions take turns on one SQLite
        # connection instead of sleeping on the database lock (see app/core/db.py), whose
        # statements run on the event loop (see app/core/sqlite_driver.py).
        engine = create_engine(settings.db, sqlite_single_connection=True)
        runtime = build_runtime(settings, engine=engine)
        try:
            await consumer_service.serve(runtime, queues=queue or None)
        finally:
            await runtime.close()

    settle_heap()
    try:
        # uvloop: the consumer's loop overhead (task switches, socket I/O to PostgreSQL) is
        # a measurable share of a batch's time.
        uvloop.run(run())
    except ValueError as exc:
        fail(str(exc), code=2)
