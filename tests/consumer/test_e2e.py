"""End to end over real processes: `jobgate serve` + `jobgate consume` on the local engine,
and `jobgate emulator` + `jobgate serve` + `jobgate consume` on the cloudflare backend.

Time moves for every process at once (the test clock file `JOBGATE_TEST_CLOCK_FILE` for the
gateway and the consumer, `/_emulator/clock` for the emulator), so retry delays are checked
without sleeping through them.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.clock import write_clock_offset
from app.core.config import REPO_ROOT
from tests.consumer.conftest import write_topology
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator
from tests.support.servers import (
    STOP_TIMEOUT_S,
    create_tenant,
    jobgate_argv,
    jobgate_env,
    jobgate_server,
)
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.slow
WAIT_S = 60.0


class Consumer:
    """`jobgate consume --queue analytics-events` as a subprocess (output in files)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env, self._logs, self._proc, self._n = env, logs, None, 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._n += 1
        with (self._logs / f"consumer{self._n}.log").open("ab") as out:
            self.proc = subprocess.Popen(
                jobgate_argv("consume", "--queue", "analytics-events"),
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,  # the handler module lives in `tests`
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S * 4)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self._logs.glob("*.log"))


class Stack:
    def __init__(
        self,
        http: httpx.Client,
        consumer: Consumer,
        clock_file: Path,
        key: str,
        emulator: Emulator | None = None,
    ) -> None:
        self.http, self.consumer, self.clock_file = http, consumer, clock_file
        self.headers = {"Authorization": f"Bearer {key}"}
        self.offset_ms = 0
        self.emulator = emulator

    def advance(self, seconds: float) -> None:
        self.offset_ms += int(seconds * 1000)
        write_clock_offset(self.clock_file, self.offset_ms)
        if self.emulator is not None:
            self.emulator.advance(seconds)

    def submit(self, mode: str) -> str:
        body = {"type": "analytics-event", "name": "e2e", "properties": {"mode": mode}}
        response = self.http.post("/v1/jobs", json=body, headers=self.headers)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}", headers=self.headers)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def wait(self, what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
        def done() -> bool:
            proc = self.consumer.proc
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the consumer exited\n{self.consumer.output()}")
            return check()

        wait_until_sync(
            done,
            timeout=timeout,
            message=lambda: f"timed out waiting for {what}\n{self.consumer.output()}",
        )


@pytest.fixture(params=["local", "cloudflare"])
def stack(
    request: pytest.FixtureRequest,
    database: tuple[str, str | None],
    db_engine: object,
    tmp_path: Path,
) -> Iterator[Stack]:
    url, schema = database
    emulator: Emulator | None = None
    backend_env: dict[str, str] = {}
    if request.param == "cloudflare":
        emulator = Emulator(start_emulator(emulator_env(database)))
        backend_env = {
            "JOBGATE_QUEUE_BACKEND": "cloudflare",
            "JOBGATE_CF_API_TOKEN": TOKEN,
            "JOBGATE_CF_ACCOUNT_ID": ACCOUNT,
            "JOBGATE_CF_API_BASE_URL": emulator.api_url,
            "JOBGATE_OUTBOX_LINGER_MS": "0",
            "JOBGATE_OUTBOX_POLL_MS": "50",
        }
    clock_file = tmp_path / "clock"
    write_clock_offset(clock_file, 0)
    topology = write_topology(
        tmp_path / "wrangler.jsonc",
        {
            "max_batch_size": 10,
            "max_batch_timeout": 0,
            "max_retries": 3,
            "retry_delay": "exponential",
            "visibility_timeout_ms": 5000,
        },
    )
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_WRANGLER_CONFIG": str(topology),
            "JOBGATE_TEST_CLOCK_FILE": str(clock_file),
            "JOBGATE_HANDLER_MODULES": "tests.consumer.e2e_handlers",
            "JOBGATE_CONSUMER_RETRY_BASE_SECONDS": "60",
            "JOBGATE_CONSUMER_RETRY_JITTER": "0",
            "JOBGATE_CONSUMER_POLL_MIN_MS": "50",
            "JOBGATE_CONSUMER_POLL_MAX_MS": "200",
            "JOBGATE_E2E_BLOCK_FILE": str(tmp_path / "block"),
            "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
            # The console script does not put the working directory on sys.path.
            "PYTHONPATH": str(REPO_ROOT),
            **backend_env,
        },
    )
    try:
        key = create_tenant(env, "e2e")["api_key"]
        consumer = Consumer(env, tmp_path)
        with jobgate_server("serve", env=env) as gateway:
            consumer.start()
            with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
                try:
                    yield Stack(http, consumer, clock_file, key, emulator)
                finally:
                    consumer.terminate()
    finally:
        if emulator is not None:
            emulator.close()


def test_job_goes_queued_running_succeeded(stack: Stack, tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.touch()
    job_id = stack.submit("block")
    # Queued at once on the local engine; accepted until published with Cloudflare.
    assert stack.job(job_id)["status"] in (
        {"queued", "running"} if stack.emulator is None else {"accepted", "queued", "running"}
    )
    # The attempt starts (running) a moment before the handler reports its progress.
    stack.wait(
        "running at 10%",
        lambda: (stack.job(job_id)["status"], stack.job(job_id)["progress"]) == ("running", 10),
    )
    block.unlink()
    stack.wait("succeeded", lambda: stack.job(job_id)["status"] == "succeeded")
    body = stack.job(job_id)
    assert (body["attempts"], body["progress"]) == (1, 100)
    assert stack.consumer.terminate() == 0  # SIGTERM: a clean exit


def test_failing_job_retries_on_schedule_then_is_dead(stack: Stack) -> None:
    job_id = stack.submit("fail")
    for attempt, delay in [(1, 60), (2, 120), (3, 240)]:
        stack.wait(
            f"attempt {attempt}",
            lambda a=attempt: (
                stack.job(job_id)["attempts"] == a  # type: ignore[misc]
                and stack.job(job_id)["status"] == "retrying"
            ),
        )
        # Just short of the delay nothing runs (the consumer polls every 50-200 ms).
        stack.advance(delay - 2)
        time.sleep(1.0)
        assert stack.job(job_id)["attempts"] == attempt
        stack.advance(2)
    stack.wait("dead", lambda: stack.job(job_id)["status"] == "dead")
    body = stack.job(job_id)
    assert body["attempts"] == 4
    assert "always fails" in body["last_error"]


def test_sigkill_mid_batch_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.touch()
    jobs = [stack.submit("block") for _ in range(5)]
    stack.wait("all running", lambda: all(stack.job(j)["status"] == "running" for j in jobs))
    stack.consumer.kill()
    block.unlink()
    stack.consumer.start()
    # The leases of the killed consumer run out after the 5 s visibility timeout.
    stack.advance(6)
    stack.wait("all succeeded", lambda: all(stack.job(j)["status"] == "succeeded" for j in jobs))
    assert [stack.job(j)["attempts"] for j in jobs] == [2] * 5
