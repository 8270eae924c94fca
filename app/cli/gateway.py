"""Commands that talk to a running gateway over HTTP (not to the database).

`--url` / `JOBGATE_URL` names the gateway, `--key` / `JOBGATE_KEY` the credential: a
tenant's API key acts on that tenant's jobs (`/v1/...`); an operator key (`jgo_...`, or the
`ADMIN_TOKEN` with `--operator`) uses the operator routes (`/v1/admin/...`) across tenants.
An error answer prints the problem's title and detail and exits 1; an unreachable gateway
exits 1 too. The key is never printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from app.cli.common import fail
from app.core.security import OPERATOR_KEY_PREFIX

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
        help="A tenant API key, or an operator key (jgo_...).",
        show_default=False,
    ),
]
OperatorOption = Annotated[
    bool,
    typer.Option(
        "--operator",
        help="Use the operator routes with a key that does not look like one (ADMIN_TOKEN).",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (JSON lines for lists).")
]

out = Console(highlight=False, soft_wrap=True)


@dataclass
class Gateway:
    """One gateway and credential; every call either answers JSON or ends the command."""

    url: str
    key: str
    operator: bool = False

    def __post_init__(self) -> None:
        if not self.key:
            fail("give a key: --key or JOBGATE_KEY")
        self.operator = self.operator or self.key.startswith(OPERATOR_KEY_PREFIX)
        self._http = httpx.Client(
            base_url=self.url.rstrip("/"),
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=TIMEOUT_S,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=body, params=query)
        except httpx.HTTPError as exc:
            fail(f"cannot reach the gateway at {self.url}: {type(exc).__name__}: {exc}")
        if response.is_success:
            return response.json() if response.content else None
        fail(*problem_lines(response))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def listing(rows: list[dict[str, Any]], columns: list[str], *, as_json: bool) -> None:
    """Every list command's output: a table of `columns`, or each whole row as a JSON line."""
    if as_json:
        for row in rows:
            print_json(row)
        return

    def cell(value: Any) -> Any:
        return " ".join(map(str, value)) if isinstance(value, list) else value

    table(None, columns, ([cell(row.get(c)) for c in columns] for row in rows))
