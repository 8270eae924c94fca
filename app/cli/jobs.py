"""`jobgate jobs`: submit, read, follow, cancel and retry jobs through a running gateway.

With a tenant's key the commands act on that tenant's jobs; with an operator key on every
tenant's (`--tenant` narrows lists and bulk retries). See `app/cli/gateway.py`. The calls
go through the Python client (`app/client`): 429 and 503 answers are retried as it does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from app.cli.common import err, fail
from app.cli.gateway import (
    DEFAULT_URL,
    Gateway,
    JsonOption,
    KeyOption,
    OperatorOption,
    UrlOption,
    out,
    print_json,
    table,
)
from app.client import GatewayUnreachable, JobgateClient, ProblemError
from app.jobs.payloads import JOB_MODELS

app = typer.Typer(
    help="Jobs through a running gateway: submit, get, list, attempts, watch, cancel, retry.",
    no_args_is_help=True,
)

FINISHED = {"succeeded", "failed", "dead", "cancelled"}
BULK_CHUNK = 100

TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Only this tenant's jobs (operator key).")
]
TypeOption = Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")]
QueueOption = Annotated[str | None, typer.Option("--queue", help="Only jobs of this queue.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _gateway(url: str, key: str, operator: bool) -> Gateway:
    return Gateway(url=url, key=key, operator=operator)


def client_of(gw: Gateway) -> JobgateClient:
    return JobgateClient(gw.url, gw.key, operator=gw.operator)


def problem_error_lines(error: ProblemError) -> list[str]:
    """`STATUS Title: detail`, then one line per invalid field of a 422."""
    lines = [f"{error.status} {error.title}: {error.detail}".rstrip(": ")]
    for item in error.errors:
        where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
        lines.append(f"{where}: {item.get('msg', '')}")
    return lines


@contextmanager
def calling(gw: Gateway) -> Iterator[JobgateClient]:
    """The client for `gw`; an error answer or an unreachable gateway ends the command."""
    client = client_of(gw)
    try:
        yield client
    except ProblemError as error:
        fail(*problem_error_lines(error))
    except GatewayUnreachable as error:
        fail(str(error))
    finally:
        client.close()


def plain(model: Any) -> dict[str, Any]:
    """A client's answer as the JSON object the gateway sent."""
    dumped: dict[str, Any] = model.model_dump(mode="json")
    return dumped


def tenant_filter(gw: Gateway, tenant: str | None) -> str | None:
    if tenant is not None and not gw.operator:
        fail("--tenant needs an operator key: a tenant's key only sees its own jobs")
    return tenant


def _short(text: str | None, size: int = 80) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= size else line[: size - 1] + "…"


def print_job(job: dict[str, Any]) -> None:
    fields = [
        "id",
        "tenant_id",
        "type",
        "queue",
        "status",
        "attempts",
        "progress",
        "progress_message",
        "next_attempt_at",
        "last_error",
        "created_at",
        "started_at",
        "finished_at",
    ]
    rows = [[name, job.get(name)] for name in fields if name in job]
    rows.append(["payload", json.dumps(job.get("payload"), ensure_ascii=False)])
    table(None, ["field", "value"], rows)


def _takes_text(job_type: str, name: str) -> bool:
    """The job type's field `name` is a string (so `siteId=1` means "1", as the API wants)."""
    model = JOB_MODELS.get(job_type)
    if model is None:
        return False
    schema = model.model_json_schema()["properties"].get(name, {})
    types = {schema.get("type")} | {branch.get("type") for branch in schema.get("anyOf", [])}
    return types - {None, "null"} == {"string"}


def field_value(job_type: str, name: str, raw: str) -> Any:
    """A `--field` VALUE: JSON if it parses, except for a string field, which takes the text."""
    if _takes_text(job_type, name):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _show_job(
    gw: Gateway, act: Callable[[JobgateClient], Any], *, as_json: bool, brief: bool = False
) -> None:
    """Make one call about a job and print the job it answers: as JSON, whole, or (brief)
    as `ID STATUS`."""
    with calling(gw) as client:
        job = plain(act(client))
    if as_json:
        print_json(job)
    elif brief:
        out.print(f"{job['id']} {job['status']}")
    else:
        print_job(job)


def print_jobs(jobs: list[dict[str, Any]], *, title: str, operator: bool) -> None:
    columns = ["id", *(["tenant"] if operator else []), "type", "queue", "status", "attempts"]
    columns += ["progress", "created", "last error"]
    rows = [
        [
            job["id"],
            *([job.get("tenant_id")] if operator else []),
            job["type"],
            job["queue"],
            job["status"],
            job["attempts"],
            f"{job['progress']}%",
            job["created_at"],
            _short(job.get("last_error")),
        ]
        for job in jobs
    ]
    table(f"{title} ({len(rows)})", columns, rows)


def list_jobs(
    gw: Gateway,
    *,
    status: str | None,
    job_type: str | None,
    queue: str | None,
    tenant: str | None,
    limit: int | None,
    as_json: bool,
    title: str,
) -> None:
    tenant_id = tenant_filter(gw, tenant)
    with calling(gw) as client:
        jobs = client.iter_jobs(
            status=status, type=job_type, queue=queue, tenant_id=tenant_id, limit=limit
        )
        if as_json:
            for job in jobs:
                print_json(plain(job))
            return
        print_jobs([plain(job) for job in jobs], title=title, operator=gw.operator)


def bulk_retry(
    gw: Gateway, filters: dict[str, Any], *, limit: int | None, yes: bool, as_json: bool
) -> None:
    """Dry run, confirmation, then the retry in chunks under a progress bar."""
    with calling(gw) as client:
        _bulk_retry(client, filters, limit=limit, yes=yes, as_json=as_json)


def _bulk_retry(
    client: JobgateClient,
    filters: dict[str, Any],
    *,
    limit: int | None,
    yes: bool,
    as_json: bool,
) -> None:
    body = {k: v for k, v in filters.items() if v is not None}
    matched = client.retry_matching(body, dry_run=True).matched
    total = matched if limit is None else min(matched, limit)
    noun = f"{body['status']} job{'s' if total != 1 else ''}"
    if total == 0:
        if as_json:
            print_json({"matched": matched, "retried": 0})
        else:
            err.print(f"no {body['status']} job matches")
        return
    if not yes:
        more = f" (of {matched} matching)" if total < matched else ""
        typer.confirm(f"Retry {total} {noun}{more}?", abort=True, err=True)
    retried = 0
    columns = (
        TextColumn("retrying"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed}/{task.total}"),
    )
    with Progress(*columns, console=err, transient=as_json) as progress:
        task = progress.add_task("retry", total=total)
        while retried < total:
            chunk = min(BULK_CHUNK, total - retried)
            done = client.retry_matching(body, dry_run=False, limit=chunk).retried
            if done == 0:
                break  # retried meanwhile by someone else
            retried += done
            progress.update(task, completed=retried)
    if as_json:
        print_json({"matched": matched, "retried": retried})
    else:
        out.print(f"retried {retried} {noun.split(' ', 1)[1] if retried == total else 'jobs'}")


@app.command("submit")
def jobs_submit(
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="The job type, e.g. send-email.")],
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="The job's fields as a JSON object.")
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            "-f",
            help="NAME=VALUE (VALUE read as JSON if it parses, unless NAME is a text field).",
        ),
    ] = None,
    delay: Annotated[int | None, typer.Option("--delay", help="Seconds before it runs.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Repeats answer the same job.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Submit one job (a tenant's key)."""
    body: dict[str, Any] = {}
    if data is not None:
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            fail(f"--data is not JSON: {exc}")
        if not isinstance(parsed, dict):
            fail("--data must be a JSON object")
        body.update(parsed)
    for item in field or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            fail(f"--field wants NAME=VALUE, not {item!r}")
        body[name] = field_value(job_type, name, raw)
    body["type"] = job_type
    if delay is not None:
        body["delay_seconds"] = delay
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    _show_job(_gateway(url, key, False), lambda client: client.submit(body), as_json=as_json)


@app.command("get")
def jobs_get(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    as_json: JsonOption = False,
) -> None:
    """Show one job."""
    _show_job(_gateway(url, key, operator), lambda client: client.get(job_id), as_json=as_json)


@app.command("list")
def jobs_list(
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    status: Annotated[
        str | None, typer.Option("--status", help="Only jobs in this status.")
    ] = None,
    job_type: TypeOption = None,
    queue: QueueOption = None,
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    gw = _gateway(url, key, operator)
    list_jobs(
        gw,
        status=status,
        job_type=job_type,
        queue=queue,
        tenant=tenant,
        limit=limit,
        as_json=as_json,
        title="jobs",
    )


@app.command("attempts")
def jobs_attempts(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    as_json: JsonOption = False,
) -> None:
    """A job's attempts, oldest first: when, how long, how it ended and why."""
    gw = _gateway(url, key, operator)
    with calling(gw) as client:
        attempts = plain(client.attempts(job_id))["data"]
    if as_json:
        for attempt in attempts:
            print_json(attempt)
        return
    rows = [
        [
            a["attempt"],
            a["started_at"],
            a["duration_ms"] if a["duration_ms"] is not None else "running",
            a["outcome"] or "",
            _short(a["error"], 120),
        ]
        for a in attempts
    ]
    table(f"attempts of {job_id}", ["#", "started", "ms", "outcome", "error"], rows)


@app.command("watch")
def jobs_watch(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="Seconds.")] = 1.0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a job's status and progress until it finishes (exit 0 only if it succeeded)."""
    gw = _gateway(url, key, operator)
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[Any, ...] | None = None
    with calling(gw) as client, Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[message]}"),
        console=err,
        transient=as_json,
    ) as progress:
        task = progress.add_task(job_id, total=100, message="")
        while True:
            job = plain(client.get(job_id))
            state = (job["status"], job["progress"], job.get("progress_message"), job["attempts"])
            if state != last:
                last = state
                if as_json:
                    print_json(job)
                progress.update(
                    task,
                    completed=job["progress"],
                    description=f"{job['status']} (attempt {job['attempts']})",
                    message=job.get("progress_message") or "",
                )
            if job["status"] in FINISHED:
                break
            if deadline is not None and time.monotonic() >= deadline:
                fail(f"job {job_id} is still {job['status']} after {timeout} s")
            time.sleep(interval)
    if not as_json:
        error = f": {_short(job.get('last_error'), 200)}" if job.get("last_error") else ""
        out.print(f"{job_id} {job['status']}{error if job['status'] != 'succeeded' else ''}")
    if job["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    as_json: JsonOption = False,
) -> None:
    """Cancel an accepted, queued or retrying job: it will not run."""
    gw = _gateway(url, key, operator)
    _show_job(gw, lambda client: client.cancel(job_id), as_json=as_json, brief=True)


@app.command("retry")
def jobs_retry(
    job_id: Annotated[
        str | None, typer.Argument(help="One job's id; or select many with --status.")
    ] = None,
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    operator: OperatorOption = False,
    status: Annotated[
        str | None, typer.Option("--status", help="Bulk: retry jobs in this status (dead, failed).")
    ] = None,
    job_type: TypeOption = None,
    queue: QueueOption = None,
    tenant: TenantOption = None,
    created_after: Annotated[
        str | None, typer.Option("--created-after", help="ISO-8601 with a time zone.")
    ] = None,
    created_before: Annotated[
        str | None, typer.Option("--created-before", help="ISO-8601 with a time zone.")
    ] = None,
    error_contains: Annotated[
        str | None, typer.Option("--error-contains", help="Only jobs whose last error has this.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Bulk: at most this many.")
    ] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Retry one failed, dead or cancelled job, or (--status) many after a dry run."""
    gw = _gateway(url, key, operator)
    if (job_id is None) == (status is None):
        fail("give either a job id or --status dead|failed")
    if job_id is not None:
        one = job_id
        _show_job(gw, lambda client: client.retry(one), as_json=as_json, brief=True)
        return
    filters = {
        "status": status,
        "type": job_type,
        "queue": queue,
        "created_after": created_after,
        "created_before": created_before,
        "error_contains": error_contains,
        "tenant_id": tenant_filter(gw, tenant),
    }
    bulk_retry(gw, filters, limit=limit, yes=yes, as_json=as_json)
