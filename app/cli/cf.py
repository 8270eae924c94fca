"""`jobgate cf`: provision and check a Cloudflare account from the queue topology.

The account and token are the Cloudflare backend's own settings (`JOBGATE_CF_ACCOUNT_ID`,
`JOBGATE_CF_API_TOKEN`, `JOBGATE_CF_API_BASE_URL`); the token is never printed.
Exit codes: 0 done (or, for doctor, every check passed); 1 an API error, a change left
undone or a failed check; 2 a setting or the topology file is wrong; 3 Cloudflare refused
the token for that account.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import err, fail, load_settings
from app.cli.gateway import print_json, table
from app.queues import provisioning
from app.queues.errors import QueueAuthFailed, QueueError
from app.queues.provisioning import Action, Change, Status
from app.queues.topology import Topology, TopologyError, load_topology

if TYPE_CHECKING:
    from cloudflare import Cloudflare

    from app.queues.config import CloudflareSettings

EXIT_FAILED, EXIT_SETTINGS, EXIT_AUTH = 1, 2, 3

app = typer.Typer(
    help="Cloudflare account: create the topology's queues and pull consumers (sync), "
    "check the token and consumers (doctor).",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="The topology file (default JOBGATE_WRANGLER_CONFIG, else wrangler.jsonc).",
        show_default=False,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")]


def _topology(config: Path | None) -> tuple[Topology, CloudflareSettings]:
    from app.jobs.payloads import JOB_TYPES

    settings = load_settings()
    if not settings.cloudflare.api_token:
        fail("set JOBGATE_CF_API_TOKEN (a Cloudflare API token)", code=EXIT_SETTINGS)
    if not settings.cloudflare.account_id:
        fail("set JOBGATE_CF_ACCOUNT_ID (the Cloudflare account id)", code=EXIT_SETTINGS)
    try:
        topology = load_topology(config or settings.queues.wrangler_config, job_types=JOB_TYPES)
    except TopologyError as exc:
        fail(str(exc), code=EXIT_SETTINGS)
    return topology, settings.cloudflare


@contextmanager
def _client(settings: CloudflareSettings) -> Iterator[Cloudflare]:
    """The official SDK on the configured account; API errors end the command in one line."""
    from cloudflare import Cloudflare

    client = Cloudflare(
        api_token=settings.api_token,
        base_url=settings.api_base_url,
        max_retries=settings.max_retries,
        timeout=settings.timeout_seconds,
    )
    try:
        with provisioning.api_errors(settings.api_base_url, settings.account_id):
            yield client
    except QueueAuthFailed as exc:
        fail(exc.detail, code=EXIT_AUTH)
    except QueueError as exc:
        fail(exc.detail, code=EXIT_FAILED)
    finally:
        client.close()


def _shown(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _change_rows(changes: Sequence[Change]) -> Iterator[list[Any]]:
    for change in changes:
        if change.action in (Action.create, Action.replace_worker):
            settings = "\n".join(f"{f.name}={_shown(f.new)}" for f in change.fields)
        else:
            settings = "\n".join(
                f"{f.name}: {_shown(f.old)} → {_shown(f.new)}" for f in change.fields
            )
        yield [change.action.value, change.kind, change.queue, settings or change.detail]


def _show_changes(title: str, changes: Sequence[Change]) -> None:
    table(title, ["action", "what", "queue", "settings"], _change_rows(changes))


@app.command("sync")
def cf_sync(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the differences; change nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also delete queues and consumers the topology does not name, and replace "
            "Worker consumers by pull consumers (asks first unless --yes).",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make the account match the topology: queues, dead letter queues, pull consumers.

    Creates what is missing and updates settings that differ; reports what
    the account holds beyond the file (`extra`), deleted only with --prune.
    A second run reports no change.

    Exit codes: 0 done, 1 an API error or a Worker consumer left in place
    (no --prune), 2 a missing setting or an invalid topology, 3 Cloudflare
    refused the token for the account.
    """
    topology, settings = _topology(config)
    with _client(settings) as client:
        account = provisioning.read_account(client, settings.account_id, topology=topology)
        todo = provisioning.plan(topology, account)
        deletions = todo.of(Action.extra, Action.replace_worker)
        if dry_run:
            _report(todo.changes, todo.summary(), dry_run=True, as_json=as_json)
            if todo.in_sync and not as_json:
                err.print("no changes: the account matches the topology")
            return
        if prune and deletions and not yes:
            _show_changes("To delete", deletions)
            if not typer.confirm(f"Delete these {len(deletions)} item(s)?", err=True):
                fail("nothing changed")
        applied = provisioning.apply(client, settings.account_id, todo, prune=prune)
    unchanged = todo.of(Action.unchanged)
    _report(
        [*applied.done, *applied.skipped, *unchanged],
        {
            "done": len(applied.done),
            "left": len(applied.skipped),
            "unchanged": len(unchanged),
        },
        dry_run=False,
        as_json=as_json,
    )
    if not as_json and not applied.done and not applied.skipped:
        err.print("no changes: the account matches the topology")
    blocked = [c for c in applied.skipped if c.action is Action.replace_worker]
    if blocked:
        queues = ", ".join(c.queue for c in blocked)
        fail(
            f"Worker consumers block the pull consumers of {queues}: "
            "run `jobgate cf sync --prune` to replace them"
        )


def _report(
    changes: Sequence[Change], summary: dict[str, int], *, dry_run: bool, as_json: bool
) -> None:
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "changes": [c.as_dict() for c in changes],
                "summary": summary,
            }
        )
        return
    title = "Planned changes (dry run)" if dry_run else "Cloudflare account after sync"
    _show_changes(title, changes)
    err.print(", ".join(f"{n} {k}" for k, n in summary.items()))


@app.command("doctor")
def cf_doctor(
    probe: Annotated[
        bool,
        typer.Option(
            "--probe/--no-probe",
            help="Check push, pull and ack with one probe message. By default on a queue of "
            "its own, `jobgate-doctor-probe`, created and deleted by the check (no real "
            "message is touched).",
        ),
    ] = True,
    probe_queue: Annotated[
        str | None,
        typer.Option(
            "--probe-queue",
            help="Probe an existing queue instead (when the token may not create queues). "
            "Messages pulled before the probe are released at once, which counts one "
            "delivery attempt for each: use a quiet queue.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the token (read queues, push, pull, ack) and that each topology queue
    has an http_pull consumer; print what is missing and how to fix it.

    The token needs Account > Queues > Edit. Exit codes: 0 every check
    passed, 1 a check failed or an API error, 2 a missing setting or an
    invalid topology, 3 Cloudflare refused the token for the account.
    """
    topology, settings = _topology(config)
    with _client(settings) as client:
        checks = provisioning.diagnose(
            client,
            settings.account_id,
            topology,
            probe_queue=probe_queue,
            run_probe=probe,
        )
    failed = [c for c in checks if c.status is Status.fail]
    if as_json:
        print_json({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        table(
            "Cloudflare account " + settings.account_id,
            ["check", "status", "detail", "fix"],
            ([c.name, c.status.value, c.detail, c.fix] for c in checks),
        )
    if failed:
        code = EXIT_AUTH if any(c.denied for c in failed) else EXIT_FAILED
        fail(f"{len(failed)} check(s) failed: " + "; ".join(c.name for c in failed), code=code)
