"""The admin commands as an operator meets them: where the gateway listens, finding a tenant
again, list output that is the same everywhere, and help text without type placeholders.

Real `jobgate` subprocesses on the test database.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from app.core.config import REPO_ROOT
from tests.support.servers import (
    ServerProcess,
    call_jobgate,
    create_tenant,
    jobgate_argv,
    jobgate_env,
)

_SHOP_KEY = "A" * 32


def _jobgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return call_jobgate(*args, env=env)


def _ok(*args: str, env: dict[str, str]) -> str:
    done = _jobgate(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def env(database: tuple[str, str | None]) -> dict[str, str]:
    url, schema = database
    return jobgate_env(
        url,
        schema=schema,
        extra={"JOBGATE_SHOP_KEY": _SHOP_KEY, "JOBGATE_ALLOW_PRIVATE_SHOP_URLS": "true"},
    )


def _argv_overriding_env(*args: str) -> object:
    """`jobgate ARGS --host 127.0.0.1 --port PORT` with an environment that would fail:
    an out-of-range JOBGATE_PORT (exit 2) and an address no interface has."""

    def argv(port: int) -> list[str]:
        return [
            "env",
            "JOBGATE_PORT=70000",
            "JOBGATE_HOST=192.0.2.1",
            *jobgate_argv(*args, "--host", "127.0.0.1", "--port", str(port)),
        ]

    return argv


@pytest.mark.slow
def test_serve_listens_where_the_options_say(env: dict[str, str]) -> None:
    with ServerProcess(_argv_overriding_env("serve"), env=env) as server:  # type: ignore[arg-type]
        assert httpx.get(server.url("/healthz"), timeout=30).status_code == 200


@pytest.mark.slow
def test_dev_listens_where_the_options_say(tmp_path: Path) -> None:
    env = jobgate_env(f"sqlite:///{tmp_path / 'jobgate.db'}")
    with ServerProcess(
        _argv_overriding_env("dev"),  # type: ignore[arg-type]
        env=env,
        startup_timeout=90,
    ) as dev:
        assert httpx.get(dev.url("/healthz"), timeout=30).status_code == 200
        assert f"gateway on http://127.0.0.1:{dev.port}" in dev.output()


@pytest.mark.slow
def test_tenants_show_finds_a_tenant_by_name_or_id(env: dict[str, str]) -> None:
    name = f"show-{uuid.uuid4().hex[:8]}"
    created = create_tenant(env, name)
    tenant_id = created["tenant_id"]
    _ok("shops", "set", tenant_id, "--url", "http://127.0.0.1:9", env=env)
    _ok("email-policy", "set", tenant_id, "--domains", "example.com", env=env)

    by_name = json.loads(_ok("tenants", "show", name, "--json", env=env))
    by_id = json.loads(_ok("tenants", "show", tenant_id, "--json", env=env))
    assert by_name == by_id
    assert by_name["id"] == tenant_id
    assert by_name["name"] == name
    assert by_name["shops"] == ["default"]
    assert [k["prefix"] for k in by_name["api_keys"]] == [created["api_key"][:11]]
    assert by_name["email_policy"]["domains"] == ["example.com"]
    # Nothing secret: not the API key, not the webhook secret.
    shown = _ok("tenants", "show", name, env=env)
    for secret in (created["api_key"], created["webhook_secret"]):
        assert secret not in shown
    assert tenant_id in shown
    assert "example.com" in shown

    # README's line that finds the tenant id again, as written there.
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    [line] = {ln for ln in readme.splitlines() if ln.startswith("TENANT_ID=$(")}
    found = subprocess.run(
        ["bash", "-c", line.replace(" dev ", f" {name} ", 1) + '; echo "$TENANT_ID"'],
        env={**env, "PATH": f"{Path(jobgate_argv()[0]).parent}:/usr/bin:/bin"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert found.stdout.strip() == tenant_id

    done = _jobgate("tenants", "show", "no-such-tenant", env=env)
    assert done.returncode == 1
    assert done.stderr == "error: no tenant has the id or name 'no-such-tenant'\n"
    assert done.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("keys", "list", "no-such-tenant"),
        ("keys", "revoke", "no-such-tenant", "some-key"),
        ("shops", "list", "no-such-tenant"),
        ("shops", "set-sender", "no-such-tenant", "shop@example.com"),
        ("webhooks", "secrets", "no-such-tenant"),
        ("webhooks", "revoke", "no-such-tenant", "some-secret"),
        ("webhooks", "sign", "no-such-tenant", "--body", "{}"),
        ("email-policy", "set", "no-such-tenant", "--any"),
        ("schedules", "list", "no-such-tenant"),
        ("schedules", "delete", "no-such-tenant", "some-schedule"),
    ],
    ids=lambda args: "-".join(args[:2]),
)
def test_every_command_taking_a_tenant_refuses_an_unknown_one(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    done = _jobgate(*args, env=env)
    assert done.returncode == 1, done.stdout
    assert done.stderr == "error: tenant no-such-tenant does not exist\n"
    assert done.stdout == ""


@pytest.mark.slow
def test_every_list_command_prints_a_table_or_json_lines(env: dict[str, str]) -> None:
    tenant_id = create_tenant(env, f"lists-{uuid.uuid4().hex[:8]}")["tenant_id"]
    _ok("shops", "set", tenant_id, "--url", "http://127.0.0.1:9", env=env)
    _ok("shops", "set", tenant_id, "--url", "http://127.0.0.1:10", "--site-id", "b", env=env)
    _ok("keys", "create", tenant_id, "--name", "second", env=env)
    _ok("operators", "create", f"op-{tenant_id[:8]}", env=env)
    job = '{"type":"sync-orders","siteId":"s1"}'
    _ok("schedules", "create", tenant_id, "nightly", "--cron", "0 3 * * *", "--job", job, env=env)
    _ok("webhooks", "rotate", tenant_id, env=env)
    commands: list[tuple[tuple[str, ...], str]] = [
        (("tenants", "list"), "name"),
        (("keys", "list", tenant_id), "prefix"),
        (("shops", "list", tenant_id), "site_id"),
        (("operators", "list"), "prefix"),
        (("schedules", "list", tenant_id), "cron"),
        (("webhooks", "secrets", tenant_id), "created_at"),
    ]
    for args, field in commands:
        lines = _ok(*args, "--json", env=env).splitlines()
        assert len(lines) >= 1, args
        rows = [json.loads(line) for line in lines]
        # One object per line, never one array for the whole list.
        assert all(isinstance(row, dict) and field in row for row in rows), args
        if args[0] in ("keys", "shops", "webhooks"):
            assert len(rows) == 2, (args, rows)
        # The default is a table with the same field as a column header (Rich box lines).
        text = _ok(*args, env=env)
        assert "┃" in text, (args, text)
        assert field in text, (args, text)
        assert not text.lstrip().startswith(("{", "[")), args


def _commands(help_text: str) -> list[str]:
    """Sub-command names of a Rich help screen's "Commands" panel."""
    panel = help_text.split("Commands ", 1)
    if len(panel) == 1:
        return []
    return re.findall(r"^│ (\S+)\s", panel[1], flags=re.MULTILINE)


def test_help_text_has_no_type_placeholders() -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    runner = CliRunner()
    seen = 0
    pending: list[list[str]] = [[]]
    while pending:
        path = pending.pop()
        done = runner.invoke(cli, [*path, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        assert done.exit_code == 0, (path, done.output)
        seen += 1
        for placeholder in ("<bool>", "<str>", "<int>", "TEXT", "INTEGER", "BOOLEAN"):
            assert placeholder not in done.output, (path, placeholder, done.output)
        pending.extend([*path, name] for name in _commands(done.output))
    assert seen > 40
