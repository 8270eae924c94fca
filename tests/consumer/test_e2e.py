"""End to end over real processes: `jobgate serve` + `jobgate consume` on the local engine,
and `jobgate emulator` + `jobgate serve` + `jobgate consume` on the cloudflare backend.

Time moves for every process at once (the test clock file `JOBGATE_TEST_CLOCK_FILE` for the
gateway and the consumer, `/_emulator/clock` for the emulator), so retry delays are checked
without sleeping through them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import Stack, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(params=["local", "cloudflare"])
def stack(
    request: pytest.FixtureRequest,
    database: tuple[str, str | None],
    db_engine: object,
    tmp_path: Path,
) -> Iterator[Stack]:
    consumer = {
        "max_batch_size": 10,
        "max_batch_timeout": 0,
        "max_retries": 3,
        "retry_delay": "exponential",
        "visibility_timeout_ms": 5000,
    }
    extra_env = {
        "JOBGATE_HANDLER_MODULES": "tests.consumer.e2e_handlers",
        "JOBGATE_CONSUMER_RETRY_BASE_SECONDS": "60",
        "JOBGATE_CONSUMER_RETRY_JITTER": "0",
        "JOBGATE_E2E_BLOCK_FILE": str(tmp_path / "block"),
    }
    with running_stack(
        request.param, database, tmp_path, consumer=consumer, extra_env=extra_env
    ) as running:
        yield running


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
        stack.wait_acked()
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
