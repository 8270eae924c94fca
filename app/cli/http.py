"""What the commands that talk to a running gateway share: the options, the client, errors.

`--url` / `JOBGATE_URL` names the gateway (default `http://127.0.0.1:8000`), `--key` /
`JOBGATE_KEY` the bearer credential. An error answer (problem+json) prints `STATUS Title:
detail` (and one line per invalid field) and exits 1; an unreachable gateway exits 1 too.
The key is never printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from app.cli.common import fail

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0

UrlOption = Annotated[
    str, typer.Option("--url", envvar="JOBGATE_URL", help="The gateway's base URL.")
]
KeyOption = Annotated[
    str,
    typer.Option(
        "--key",
        envvar="JOBGATE_KEY",
        help="The bearer credential (an operator key jgo_... for operator commands).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (JSON lines for lists).")
]

out = Console(highlight=False, soft_wrap=True)


def api_client(url: str, key: str) -> httpx.Client:
    """A client for the gateway at `url` authenticating with `key` (exits 1 without one)."""
    if not key:
        fail("give a key: --key or JOBGATE_KEY")
    return httpx.Client(
        base_url=url.rstrip("/"),
        headers={"Authorization": f"Bearer {key}"},
        timeout=TIMEOUT_S,
    )


def call(client: httpx.Client, method: str, path: str, json: Any = None) -> Any:
    """One request: the answer's JSON (None when empty), or the command ends with the
    problem's lines and exit 1."""
    try:
        response = client.request(method, path, json=json)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway at {client.base_url}: {type(exc).__name__}: {exc}")
    if response.is_success:
        return response.json() if response.content else None
    fail(*problem_lines(response))


def problem_lines(response: httpx.Response) -> list[str]:
    """`STATUS Title: detail`, then one line per invalid field of a 422."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return [f"{response.status_code} {response.reason_phrase}"]
    title = problem.get("title") or response.reason_phrase
    lines = [f"{response.status_code} {title}: {problem.get('detail') or ''}".rstrip(": ")]
    for error in problem.get("errors") or []:
        if isinstance(error, dict):
            where = ".".join(str(p) for p in error.get("loc", []) if p != "body")
            lines.append(f"{where}: {error.get('msg', '')}")
    return lines


def print_json(value: Any) -> None:
    print(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def table(title: str | None, columns: list[str], rows: Iterable[list[Any]]) -> None:
    grid = Table(title=title, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(grid)
