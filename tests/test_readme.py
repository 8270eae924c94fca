"""Every shell command of the README runs, as written, against a live `jobgate dev`.

The README's fenced `sh`/`bash` blocks are read from the file. Each one is either run here
(with only the placeholders a reader fills in replaced: the gateway's address, `jg_...`
keys, job ids) or names the test or CI step that runs it; a new block with neither fails
`test_every_shell_block_is_run_somewhere`, so the README cannot grow an untested command.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.core.config import REPO_ROOT
from tests.support.servers import (
    STOP_TIMEOUT_S,
    ServerProcess,
    free_port,
    jobgate_argv,
    jobgate_env,
    run_jobgate,
)

README = REPO_ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"
SHELL_BLOCK = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.DOTALL | re.MULTILINE)

# Blocks run by another test or by CI, by their first line.
RUN_ELSEWHERE = {
    "make run": "`make run` is `make install` + `jobgate dev` (the gateway below); "
    "`make test` is what .ci/run runs",
    "cd clients/typescript": "tests/clients/test_typescript.py (npm ci, npm run build, node tests)",
    "export JOBGATE_KEY=jg_...       # the tenant the jobs belong to": (
        "tests/migrate/test_bull_e2e.py (dry run, run, run again, on real Bull and BullMQ jobs)"
    ),
}
# Blocks run here, by their first line.
RUN_HERE = {
    "export JOBGATE_KEY=jg_...   # the key `make run` printed",
    ".venv/bin/jobgate tenants list",
    "TENANT_ID=$(.venv/bin/jobgate tenants show dev",
    "curl -s -X POST http://127.0.0.1:8000/v1/schedules",
    "export JOBGATE_KEY=jg_...\n",
    "export JOBGATE_URL=http://127.0.0.1:8000 JOBGATE_KEY=jgo_...",
}


def shell_blocks() -> list[str]:
    return SHELL_BLOCK.findall(README.read_text(encoding="utf-8"))


def _block(first_line: str) -> str:
    [block] = [b for b in shell_blocks() if b.startswith(first_line)]
    return block


def test_every_shell_block_is_run_somewhere() -> None:
    known = (*RUN_HERE, *RUN_ELSEWHERE)
    orphans = [b.splitlines()[0] for b in shell_blocks() if not b.startswith(known)]
    assert orphans == [], "README shell blocks no test runs: add them to tests/test_readme.py"
    for first_line in known:
        _block(first_line)  # each named block exists, once


@dataclass
class Dev:
    """`jobgate dev` on a fresh SQLite file, and the environment a reader's shell would have."""

    server: ServerProcess
    env: dict[str, str]

    def sh(self, script: str, *, stdin: str = "", key: str | None = None) -> str:
        """Run README lines in bash, with the placeholders a reader fills in filled in."""
        script = script.replace(README_URL, self.server.base_url)
        script = re.sub(r"^export JOBGATE_(KEY|URL)=.*$", "", script, flags=re.MULTILINE)
        env = self.env if key is None else {**self.env, "JOBGATE_KEY": key}
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            input=stdin,
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    env = jobgate_env(f"sqlite+aiosqlite:///{tmp_path / 'jobgate.sqlite'}")
    server = ServerProcess(lambda port: jobgate_argv("dev", "--port", str(port)), env=env)
    with server:
        [key] = re.findall(r"export JOBGATE_KEY=(\S+)", server.log_text())
        bin_dir = Path(jobgate_argv()[0]).parent
        shell_env = {
            **env,
            "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "JOBGATE_KEY": key,
            "JOBGATE_URL": server.base_url,
        }
        yield Dev(server, shell_env)


def _json_lines(output: str) -> list[dict[str, Any]]:
    """The JSON objects in `output` (curl -s ends none with a newline)."""
    decoder, found, at = json.JSONDecoder(), [], output.find("{")
    while at != -1:
        value, end = decoder.raw_decode(output, at)
        found.append(value)
        at = output.find("{", end)
    return found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_commands_run_as_written(dev: Dev) -> None:
    # Quick start: submit a job with curl, read it back (`<id>` is the id it answered).
    submit, get = _block("export JOBGATE_KEY=jg_...   # the key").split("\n\n")
    [submitted] = _json_lines(dev.sh(submit))
    assert (submitted["type"], submitted["queue"]) == ("sync-single-order", "prestashop-sync")
    [read] = _json_lines(dev.sh(get.replace("<id>", str(submitted["id"]))))
    assert read["id"] == submitted["id"]

    # Lost the key: find the dev tenant again and make it a new key.
    output = dev.sh(_block(".venv/bin/jobgate tenants list"))
    created_key = _json_lines(output)[-1]
    assert str(created_key["api_key"]).startswith("jg_")

    # A signed webhook, replayed by nobody: one job.
    [answer] = _json_lines(dev.sh(_block("TENANT_ID=$(.venv/bin/jobgate tenants show dev")))
    assert answer["replay"] is False
    assert len(answer["jobs"]) == 1

    # The company's two schedules.
    created = _json_lines(dev.sh(_block("curl -s -X POST http://127.0.0.1:8000/v1/schedules")))
    assert [c["name"] for c in created] == ["orders-every-3h", "products-every-3h"]

    # The jobs CLI: `0193...` is a job that ran (watch, attempts) or one still waiting
    # (cancel, then retry the cancelled job).
    done_id = _json_lines(dev.sh("jobgate jobs submit analytics-event -f name=x --json"))[0]["id"]
    waiting_id = _json_lines(
        dev.sh("jobgate jobs submit analytics-event -f name=x --delay 3600 --json")
    )[0]["id"]
    operator_key = json.loads(run_jobgate("operators", "create", "readme", "--json", env=dev.env))[
        "api_key"
    ]
    for line in _block("export JOBGATE_KEY=jg_...\n").splitlines():
        command = line.split("  #")[0].strip()
        if not command.startswith("jobgate "):
            continue
        target = waiting_id if " cancel " in command or " retry 0193" in command else done_id
        is_operator = command.startswith("jobgate dlq purge")
        dev.sh(
            command.replace("0193...", str(target)),
            stdin="y\n",
            key=operator_key if is_operator else None,
        )

    # The operator's queues, over curl and the CLI.
    queues = _block("export JOBGATE_URL=http://127.0.0.1:8000 JOBGATE_KEY=jgo_...")
    output = dev.sh(queues, stdin="y\n", key=operator_key)
    assert '"paused":true' in output.replace(" ", "")
    assert '"cancelled_jobs":' in output.replace(" ", "")


def test_the_readme_redis_line_starts_a_redis(tmp_path: Path) -> None:
    """`make test` needs Redis: the README's `redis-server` line, on a free port."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed")
    [line] = re.findall(r"`(redis-server [^`]+)`", README.read_text(encoding="utf-8"))
    assert "--port 6379" in line
    port = str(free_port())
    subprocess.run(
        ["bash", "-c", line.replace("--port 6379", f"--port {port}")],
        cwd=tmp_path,
        check=True,
        timeout=30,
    )
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", port]
    try:
        for _ in range(50):
            ping = subprocess.run([*cli, "ping"], capture_output=True, text=True, check=False)
            if ping.stdout.strip() == "PONG":
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert ping.stdout.strip() == "PONG"
        saving = subprocess.run(
            [*cli, "config", "get", "save"], capture_output=True, text=True, check=True
        )
        assert saving.stdout.split() == ["save"]  # `--save ""`: never writes to disk
    finally:
        subprocess.run([*cli, "shutdown", "nosave"], capture_output=True, timeout=STOP_TIMEOUT_S)
