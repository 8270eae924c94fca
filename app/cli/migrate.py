"""`jobgate migrate bull`: import the jobs still waiting in Bull/BullMQ queues (see
`app/migrate`), through a running gateway with a tenant's key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from app.cli.common import err, fail
from app.cli.gateway import DEFAULT_URL, JsonOption, UrlOption, print_json, table
from app.client import GatewayUnreachable, JobgateClient, ProblemError, RetryPolicy
from app.migrate import service
from app.migrate.bull import BullReader
from app.migrate.errors import MappingInvalid, NoQueues
from app.migrate.service import Migration, Outcome, Summary

app = typer.Typer(help="Import jobs from other queue systems.", no_args_is_help=True)

TenantKeyOption = Annotated[
    str,
    typer.Option(
        "--key",
        envvar="JOBGATE_KEY",
        help="The API key (jobs:write) of the tenant the jobs go to; not for --dry-run.",
        show_default=False,
    ),
]
# A migration outlasts a rate-limit window: wait out 429/503 answers longer than the CLI's
# other commands do.
MIGRATION_RETRIES = RetryPolicy(max_attempts=30, max_delay_s=120.0)

BULL_HELP = "\n\n".join(
    [
        "Import the waiting, delayed and (with --include-failed) failed jobs of Bull and "
        "BullMQ queues into jobgate, through a running gateway with a tenant's key.",
        "Reads Redis only: no Bull key is changed, locked or removed. Stop Bull's workers "
        "first (a job must not run in both) and remove the Bull queues yourself once the "
        "import is checked.",
        "Each job is submitted with idempotency key bull:QUEUE:ID, so running it again "
        "imports nothing twice. Delayed jobs keep their remaining delay (at most 86,400 s; "
        "later ones are skipped unless --cap-delay). Exits 1 when a job was skipped for an "
        "error, unless --allow-skips.",
    ]
)


def summary_rows(summary: Summary) -> list[dict[str, Any]]:
    ordered = sorted(summary.rows.items(), key=lambda item: (*item[0][:2], item[0][2].value))
    return [
        {
            "queue": queue,
            "state": state,
            "result": outcome.value,
            "reason": reason,
            "jobs": row.count,
            "examples": row.examples,
        }
        for (queue, state, outcome, reason), row in ordered
    ]


def print_summary(summary: Summary, *, title: str, as_json: bool) -> None:
    rows = summary_rows(summary)
    if as_json:
        for row in rows:
            print_json(row)
        return
    columns = ["queue", "state", "result", "reason", "jobs", "examples"]
    table(
        title,
        [*columns[:-1], "e.g. ids"],
        ([*(r[c] for c in columns[:-1]), " ".join(r["examples"])] for r in rows),
    )


def totals_line(summary: Summary, *, dry_run: bool) -> str:
    done = Outcome.would_import if dry_run else Outcome.imported
    return (
        f"{done.value}: {summary.total(done)}, already imported: "
        f"{summary.total(Outcome.replayed)}, not migrated: "
        f"{summary.total(Outcome.not_migrated)}, skipped for an error: {summary.errors}"
    )


@app.command("bull", help=BULL_HELP)
def migrate_bull(
    redis_url: Annotated[
        str, typer.Option("--redis-url", envvar="BULL_REDIS_URL", help="Bull's Redis.")
    ],
    mapping_file: Annotated[
        Path,
        typer.Option(
            "--mapping", help="YAML or JSON: Bull queue (and job name) -> jobgate job type."
        ),
    ],
    prefix: Annotated[str, typer.Option("--prefix", help="Bull's key prefix.")] = "bull",
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", help="Only this Bull queue (repeat it); default: every queue."),
    ] = None,
    include_failed: Annotated[
        bool, typer.Option("--include-failed", help="Also import failed jobs (run again).")
    ] = False,
    cap_delay: Annotated[
        bool,
        typer.Option(
            "--cap-delay", help="Import jobs due in over 86,400 s with that delay (they run early)."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and check per queue and state; send nothing.")
    ] = False,
    allow_skips: Annotated[
        bool, typer.Option("--allow-skips", help="Exit 0 even when jobs were skipped for errors.")
    ] = False,
    key: TenantKeyOption = "",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    # Here, not at the top: every `jobgate` command (the gateway's too) loads this module.
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        mapping = service.load_mapping(mapping_file)
    except MappingInvalid as exc:
        fail(exc.detail, code=2)
    if not dry_run and not key:
        fail("give the tenant's key: --key or JOBGATE_KEY (or use --dry-run)")
    try:
        redis = Redis.from_url(redis_url, socket_timeout=30)
    except ValueError as exc:
        fail(f"--redis-url: {exc}", code=2)
    client = None if dry_run else JobgateClient(url, key, retry=MIGRATION_RETRIES)
    migration = Migration(
        BullReader(redis, prefix),
        mapping,
        client,
        include_failed=include_failed,
        cap_delay=cap_delay,
    )
    where = f"Redis at {redis_url.split('@')[-1]}"  # never the password before the @
    aborted: str | None = None
    try:
        try:
            queues = migration.queues(queue)
            total = migration.size(queues)
        except NoQueues as exc:
            fail(exc.detail)
        except RedisError as exc:
            fail(f"{where}: {type(exc).__name__}: {exc}")
        columns = (
            TextColumn("checking" if dry_run else "importing"),
            BarColumn(),
            MofNCompleteColumn(),
        )
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("jobs", total=total)
            migration.on_progress = lambda n: progress.advance(task, n)
            migration.run(queues)
    except RedisError as exc:
        aborted = f"{where}: {type(exc).__name__}: {exc}"
    except ProblemError as exc:
        aborted = f"the gateway: {exc}"
    except GatewayUnreachable as exc:
        aborted = str(exc)
    finally:
        redis.close()
        if client is not None:
            client.close()
    summary = migration.summary
    title = "dry run: nothing sent" if dry_run else "migrated from Bull"
    print_summary(summary, title=title, as_json=as_json)
    err.print(totals_line(summary, dry_run=dry_run))
    if aborted is not None:
        fail(f"stopped: {aborted} (what was imported stays; run again to go on)")
    if summary.errors and not allow_skips:
        raise typer.Exit(1)
