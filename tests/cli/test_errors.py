"""Every command group ends on a domain error the same way: one line, an exit code, no traceback.

Real `jobgate` subprocesses, so what is checked is what a shell sees on stderr.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import typer

from app.cli.common import domain_errors, fail
from app.core.config import REPO_ROOT
from tests.support.servers import call_jobgate, create_tenant, jobgate_env

_JOB = '{"type":"sync-orders","siteId":"s1"}'
_SHOP_KEY = "A" * 32


def _jobgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return call_jobgate(*args, env=env)


def _assert_one_line_error(done: subprocess.CompletedProcess[str], message: str, code: int) -> None:
    assert done.returncode == code, done.stderr
    assert done.stderr == f"error: {message}\n"
    assert done.stdout == ""


def test_fail_prints_one_line_per_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited:
        fail("first\nsecond", "third", code=2)
    assert exited.value.exit_code == 2
    assert capsys.readouterr().err == "error: first second\nerror: third\n"


def test_a_bug_keeps_its_traceback() -> None:
    # Only what a user can fix becomes a one-line exit; anything else is ours to see.
    with pytest.raises(ZeroDivisionError), domain_errors():
        _ = 1 / 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("keys", "create", "no-such-tenant"),
        ("webhooks", "rotate", "no-such-tenant"),
        ("email-policy", "get", "no-such-tenant"),
        ("shops", "set", "no-such-tenant", "--url", "https://shop.example"),
        ("schedules", "create", "no-such-tenant", "orders", "--cron", "0 * * * *", "--job", _JOB),
    ],
    ids=lambda args: f"{args[0]}-{args[1]}",
)
def test_unknown_tenant_is_one_line_and_exit_1(
    database: tuple[str, str | None], args: tuple[str, ...]
) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema, extra={"JOBGATE_SHOP_KEY": _SHOP_KEY})
    _assert_one_line_error(_jobgate(*args, env=env), "tenant no-such-tenant does not exist", 1)


@pytest.mark.slow
def test_other_domain_errors_share_the_exit(database: tuple[str, str | None]) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema)
    _assert_one_line_error(
        _jobgate("operators", "revoke", "no-such-key", env=env),
        "operator key no-such-key does not exist",
        1,
    )
    # A value the domain refuses (validation) is the same kind of exit.
    tenant_id = create_tenant(env, "bogus-rate")["tenant_id"]
    _assert_one_line_error(
        _jobgate("email-policy", "set", tenant_id, "--any", "--rate", "bogus", env=env),
        "rate: 'bogus' is not a rate limit such as '600/minute'",
        1,
    )
    # Usage mistakes the command itself catches exit 2, also in one line.
    _assert_one_line_error(
        _jobgate("keys", "create", "no-such-tenant", "--scope", "bogus", env=env),
        "'bogus' is not a valid Scope",
        2,
    )


@pytest.mark.slow
def test_message_with_brackets_is_printed_as_is(database: tuple[str, str | None]) -> None:
    # Before: rich markup read `[b]` in a tenant id as a style and swallowed it.
    url, schema = database
    env = jobgate_env(url, schema=schema)
    _assert_one_line_error(
        _jobgate("keys", "create", "x[b]y", env=env), "tenant x[b]y does not exist", 1
    )


def _unwritable(tmp_path: Path) -> Path:
    """A database path below a regular file: nobody, not even root, can create it."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return blocker / "jobgate.db"


@pytest.mark.slow
def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    for url, message in (
        (
            f"sqlite:///{_unwritable(tmp_path)}",
            "cannot open the SQLite file of JOBGATE_DATABASE_URL"
            " (OperationalError (SQLITE_CANTOPEN))",
        ),
        (
            # Port 1 on loopback: nothing listens there, the connection is refused.
            "postgresql://postgres@127.0.0.1:1/jobgate",
            "the job store is unavailable (ConnectionRefusedError: [Errno 111] "
            "Connect call failed ('127.0.0.1', 1))",
        ),
    ):
        env = jobgate_env(url)
        for args in (("db", "upgrade"), ("tenants", "create", "acme"), ("keys", "list", "t")):
            _assert_one_line_error(_jobgate(*args, env=env), message, 1)


@pytest.mark.slow
def test_openapi_needs_no_database(tmp_path: Path) -> None:
    committed = (REPO_ROOT / "openapi.yaml").read_text(encoding="utf-8")
    writable = tmp_path / "jobgate.db"
    for url in (
        f"sqlite:///{writable}",
        f"sqlite:///{_unwritable(tmp_path)}",
        "postgresql://postgres@127.0.0.1:1/jobgate",
    ):
        # Production without a secret key would refuse to build the gateway: the document
        # is built from the routes alone.
        env = jobgate_env(url, extra={"JOBGATE_ENVIRONMENT": "production"})
        env.pop("JOBGATE_SECRET_KEY")
        done = _jobgate("openapi", env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout == committed
    assert not writable.exists()


@pytest.mark.slow
def test_a_wrong_setting_is_one_line_and_exit_2(database: tuple[str, str | None]) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema, extra={"JOBGATE_PORT": "eighty"})
    message = (
        "invalid setting JOBGATE_PORT: Input should be a valid integer,"
        " unable to parse string as an integer"
    )
    for args in (("keys", "list", "t"), ("db", "upgrade"), ("serve",)):
        _assert_one_line_error(_jobgate(*args, env=env), message, 2)
