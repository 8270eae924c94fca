"""`jobgate queues`: the operator's queue controls, over the gateway's HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from app.cli.common import err, fail
from app.cli.gateway import (
    DEFAULT_URL,
    Gateway,
    JsonOption,
    KeyOption,
    UrlOption,
    print_json,
    table,
)

app = typer.Typer(
    help="Queues of the topology: backlog, in flight, dead letters; pause, resume, purge "
    "(operator key).",
    no_args_is_help=True,
)

NameArgument = Annotated[str, typer.Argument(help="A queue of the topology.")]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print_json(row)
        return
    table(
        None,
        ["queue", "backlog", "in flight", "oldest", "dead letters", "paused"],
        (
            [
                r["name"],
                r["backlog"],
                r["in_flight"],
                _age(r["oldest_age_seconds"]),
                "-"
                if r["dead_letter_queue"] is None
                else f"{r['dead_letter_backlog']} in {r['dead_letter_queue']}",
                "yes" if r["paused"] else "no",
            ]
            for r in rows
        ),
    )


@app.command("list")
def queues_list(
    key: KeyOption = "", url: UrlOption = DEFAULT_URL, as_json: JsonOption = False
) -> None:
    """Every queue of the topology with its numbers."""
    with Gateway(url, key) as gateway:
        _show(gateway.request("GET", "/v1/admin/queues")["data"], as_json)


@app.command("pause")
def queues_pause(
    name: NameArgument,
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Stop deliveries: the queue still accepts jobs, consumers get none until resumed."""
    with Gateway(url, key) as gateway:
        _show([gateway.request("POST", f"/v1/admin/queues/{name}/pause")], as_json)


@app.command("resume")
def queues_resume(
    name: NameArgument,
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Deliver the queue's jobs again."""
    with Gateway(url, key) as gateway:
        _show([gateway.request("POST", f"/v1/admin/queues/{name}/resume")], as_json)


@app.command("purge")
def queues_purge(
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    key: KeyOption = "",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Delete every message of the queue; its waiting jobs become `cancelled`."""
    with Gateway(url, key) as gateway:
        if not yes:
            rows = gateway.request("GET", "/v1/admin/queues")["data"]
            row = next((r for r in rows if r["name"] == name), None)
            if row is None:
                fail(f"queue {name!r} is not in the topology")
            prompt = f"Delete the {row['backlog']} message(s) of {name} and cancel their jobs?"
            if not typer.confirm(prompt, err=True):
                fail("not purged")
        result = gateway.request("POST", f"/v1/admin/queues/{name}/purge", body={"confirm": name})
    if as_json:
        print_json(result)
        return
    purged = "?" if result["purged"] is None else result["purged"]
    err.print(f"purged {name}: {purged} message(s), {result['cancelled_jobs']} job(s) cancelled")
