"""`jobgate dlq`: the dead letter queues, seen as the dead jobs they hold.

`list` and `retry` read and redrive dead jobs through the gateway (a retried job leaves its
dead letter queue); `purge` empties a queue through the operator's queue purge route.
"""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import err
from app.cli.gateway import (
    DEFAULT_URL,
    Gateway,
    JsonOption,
    KeyOption,
    OperatorOption,
    UrlOption,
    out,
    print_json,
)
from app.cli.jobs import (
    QueueOption,
    TenantOption,
    TypeOption,
    YesOption,
    bulk_retry,
    list_jobs,
    tenant_filter,
)

app = typer.Typer(help="Dead letter queues: list, retry (redrive) and purge.", no_args_is_help=True)


@app.command("list")
def dlq_list(
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    queue: QueueOption = None,
    job_type: TypeOption = None,
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Dead jobs (their copies sit in the dead letter queues), newest first."""
    gw = Gateway(url=url, key=key, operator=operator)
    list_jobs(
        gw,
        status="dead",
        job_type=job_type,
        queue=queue,
        tenant=tenant,
        limit=limit,
        as_json=as_json,
        title="dead jobs",
    )


@app.command("retry")
def dlq_retry(
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    queue: QueueOption = None,
    job_type: TypeOption = None,
    tenant: TenantOption = None,
    error_contains: Annotated[
        str | None, typer.Option("--error-contains", help="Only jobs whose last error has this.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many.")] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Queue dead jobs again (paced), after a dry run and a confirmation."""
    gw = Gateway(url=url, key=key, operator=operator)
    filters = {
        "status": "dead",
        "type": job_type,
        "queue": queue,
        "error_contains": error_contains,
        "tenant_id": tenant_filter(gw, tenant),
    }
    bulk_retry(gw, filters, limit=limit, yes=yes, as_json=as_json)


@app.command("purge")
def dlq_purge(
    name: Annotated[str, typer.Argument(help="The queue to empty, e.g. email-sending-dlq.")],
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete every message of a (dead letter) queue: operator key; asks first."""
    gw = Gateway(url=url, key=key, operator=operator)
    if not yes:
        typer.confirm(
            f"Delete every message of queue {name}? This cannot be undone", abort=True, err=True
        )
    result = gw.request("POST", f"/v1/admin/queues/{name}/purge", body={"confirm": name})
    if as_json:
        print_json(result)
    elif isinstance(result, dict) and result:
        details = ", ".join(f"{k}: {v}" for k, v in result.items())
        out.print(f"purged {name} ({details})")
    else:
        err.print(f"purged {name}")
