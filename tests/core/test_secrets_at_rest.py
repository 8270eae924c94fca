"""Secrets at rest: no serving on the public development key, a private SQLite file.

`jobgate serve`, `jobgate consume` and the Docker image's command refuse to start without
an explicit JOBGATE_SECRET_KEY (it encrypts stored webhook secrets and shop keys); only
`jobgate dev` runs on the development key. The SQLite file and its -wal/-shm are 0600.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.core.config import DEV_SECRET_KEY, REPO_ROOT, DatabaseSettings
from app.core.db import create_engine
from tests.consumer.conftest import write_topology
from tests.support.servers import (
    ServerProcess,
    db_upgrade,
    jobgate_argv,
    jobgate_env,
)
from tests.support.waiting import wait_until_sync

REFUSAL_TIMEOUT_S = 60.0


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A command that wrongly starts serving never exits: the timeout fails the test.
    return subprocess.run(
        argv,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
        check=False,
    )


def _env_without_key(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = jobgate_env(f"sqlite:///{tmp_path / 'jobgate.db'}")
    del env["JOBGATE_SECRET_KEY"]
    del env["JOBGATE_ENVIRONMENT"]  # the default, `development`, as outside Docker
    return {**env, **extra}


def _assert_refused(done: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: JOBGATE_SECRET_KEY"), lines[0]
    # Refused before anything is touched.
    assert not (tmp_path / "jobgate.db").exists()


@pytest.mark.parametrize("command", [["serve"], ["consume"], ["consume", "--queue", "x"]])
def test_serve_and_consume_refuse_without_a_secret_key(tmp_path: Path, command: list[str]) -> None:
    done = _run(jobgate_argv(*command), _env_without_key(tmp_path))
    _assert_refused(done, tmp_path)
    assert "jobgate dev" in done.stderr


@pytest.mark.parametrize(
    ("key", "why"), [(DEV_SECRET_KEY, "is not set"), ("short-key", "too short")]
)
def test_the_placeholder_or_a_short_key_is_refused(tmp_path: Path, key: str, why: str) -> None:
    env = _env_without_key(tmp_path, JOBGATE_SECRET_KEY=key)
    done = _run(jobgate_argv("serve"), env)
    _assert_refused(done, tmp_path)
    assert why in done.stderr


def _dockerfile_runtime() -> tuple[dict[str, str], list[str]]:
    """The ENV and CMD of the Dockerfile's last stage (the image that runs)."""
    lines = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    env: dict[str, str] = {}
    cmd: list[str] = []
    for line in stage:
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
        elif line.startswith("CMD "):
            cmd = json.loads(line[4:])
    return env, cmd


def test_the_docker_image_command_refuses_without_a_secret_key(tmp_path: Path) -> None:
    image_env, cmd = _dockerfile_runtime()
    assert cmd[0] == "jobgate"
    assert "JOBGATE_SECRET_KEY" not in image_env
    env = _env_without_key(tmp_path)
    env.update({k: v for k, v in image_env.items() if k.startswith("JOBGATE_")})
    # Paths inside the image, mapped onto this checkout.
    env["JOBGATE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'jobgate.db'}"
    env["JOBGATE_WRANGLER_CONFIG"] = str(REPO_ROOT / "wrangler.jsonc")
    env["JOBGATE_HOST"] = "127.0.0.1"
    done = _run(jobgate_argv(*cmd[1:]), env)
    _assert_refused(done, tmp_path)


@pytest.mark.slow
def test_jobgate_dev_runs_gateway_and_consumer_on_the_development_key(tmp_path: Path) -> None:
    topology = write_topology(
        tmp_path / "wrangler.jsonc", {"max_batch_size": 1, "max_batch_timeout": 0}
    )
    env = _env_without_key(
        tmp_path,
        JOBGATE_WRANGLER_CONFIG=str(topology),
        JOBGATE_SQLITE_SYNCHRONOUS="NORMAL",
        JOBGATE_CONSUMER_POLL_MAX_MS="200",
    )
    with ServerProcess(jobgate_argv("dev"), env=env, startup_timeout=90) as dev:
        output = dev.output()
        assert "JOBGATE_SECRET_KEY is not set" in output
        match = re.search(r"JOBGATE_KEY=(jg_\S+)", output)
        assert match, output
        headers = {"Authorization": f"Bearer {match.group(1)}"}
        with httpx.Client(base_url=dev.base_url, timeout=30) as http:
            job = {"type": "analytics-event", "name": "signup", "properties": {}}
            made = http.post("/v1/jobs", json=job, headers=headers)
            assert made.status_code == 202, made.text

            # The consumer child (`consume --dev`) must be running to finish the job.
            def status() -> str:
                job = http.get(f"/v1/jobs/{made.json()['id']}", headers=headers).json()
                return str(job["status"])

            wait_until_sync(
                lambda: status() == "succeeded", timeout=90, interval=0.2, message=dev.output
            )
            assert status() == "succeeded", dev.output()


@pytest.fixture
def umask_022() -> Iterator[None]:
    # The usual default, under which SQLite by itself would create a 0644 file.
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.asyncio
@pytest.mark.usefixtures("umask_022")
async def test_sqlite_file_and_its_wal_and_shm_are_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    engine = create_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x TEXT)"))
            await conn.execute(text("INSERT INTO t VALUES ('secret')"))
        async with engine.connect() as conn:  # open: the -wal and -shm files exist
            await conn.execute(text("SELECT x FROM t"))
            files = [path, path.with_name("fresh.db-wal"), path.with_name("fresh.db-shm")]
            assert {f.name: oct(_mode(f)) for f in files} == {f.name: "0o600" for f in files}
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("umask_022")
def test_db_upgrade_creates_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "jobgate.db"
    db_upgrade(jobgate_env(f"sqlite:///{path}"))
    assert _mode(path) == 0o600


@pytest.mark.asyncio
async def test_an_existing_readable_file_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    engine = create_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    try:
        with caplog.at_level(logging.WARNING, logger="app.core.db"):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert _mode(path) == 0o644
    assert "chmod 600" in caplog.text
