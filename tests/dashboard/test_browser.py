"""The dashboard and the API docs in real headless Chromium, over real processes.

`jobgate serve` + `jobgate consume` on the local engine, and on the Cloudflare backend
(`jobgate emulator` beside them): a job whose handler fails goes
dead; the operator logs in through the login page, sees every queue of the topology, opens
the dead job from the dead letters page, clicks Retry, and the page follows the job until it
succeeds. Every request the pages make must stay on the gateway's origin. Screenshots are
saved under the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import REPO_ROOT
from app.jobs.payloads import JOB_TYPES
from app.queues.topology import load_topology
from tests.consumer.conftest import write_topology
from tests.dashboard.browser_handlers import FIX_FILE_ENV
from tests.support.browser import chromium, new_page, require_chromium
from tests.support.servers import (
    ServerProcess,
    create_tenant,
    emulated_cloudflare,
    jobgate_env,
    jobgate_process,
    jobgate_server,
    run_jobgate,
)
from tests.support.waiting import wait_until_sync

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WAIT_S = 90.0


@dataclass
class Stack:
    gateway: ServerProcess
    consumer: ServerProcess
    http: httpx.Client
    tenant_key: str
    operator_key: str
    topology_file: Path
    fix_file: Path

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(
            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {self.tenant_key}"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_status(self, job_id: str, status: str) -> None:
        def reached() -> bool:
            if not self.consumer.running:
                raise AssertionError(f"the consumer exited\n{self.consumer.output()}")
            return self.job(job_id)["status"] == status

        wait_until_sync(
            reached,
            timeout=WAIT_S,
            interval=0.2,
            message=lambda: (
                f"job {job_id} never became {status}: {self.job(job_id)}\n{self.consumer.output()}"
            ),
        )


@pytest.fixture(params=["local", "cloudflare"])
def stack(
    request: pytest.FixtureRequest,
    database: tuple[str, str | None],
    db_engine: object,
    tmp_path: Path,
) -> Iterator[Stack]:
    require_chromium()  # before starting processes for nothing
    url, schema = database
    # One attempt: a failure is final, so the job is dead at once.
    topology = write_topology(
        tmp_path / "wrangler.jsonc",
        {"max_batch_size": 10, "max_batch_timeout": 0, "max_retries": 0},
    )
    fix_file = tmp_path / "fixed"
    with contextlib.ExitStack() as resources:
        backend_env: dict[str, str] = {}
        if request.param == "cloudflare":
            emulator, backend_env = emulated_cloudflare(database)
            resources.callback(emulator.close)
        env = jobgate_env(
            url,
            schema=schema,
            extra={
                "JOBGATE_WRANGLER_CONFIG": str(topology),
                "JOBGATE_HANDLER_MODULES": "tests.dashboard.browser_handlers",
                FIX_FILE_ENV: str(fix_file),
                "JOBGATE_CONSUMER_POLL_MIN_MS": "50",
                "JOBGATE_CONSUMER_POLL_MAX_MS": "200",
                "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
                # The console script does not put the working directory on sys.path.
                "PYTHONPATH": str(REPO_ROOT),
                **backend_env,
            },
        )
        tenant_key = create_tenant(env, "browser")["api_key"]
        created = run_jobgate("operators", "create", "browser-test", "--json", env=env)
        gateway = resources.enter_context(jobgate_server("serve", env=env))
        consumer = resources.enter_context(
            jobgate_process("consume", "--queue", "analytics-events", env=env)
        )
        http = resources.enter_context(httpx.Client(base_url=gateway.base_url, timeout=30))
        yield Stack(
            gateway,
            consumer,
            http,
            tenant_key,
            json.loads(created)["api_key"],
            topology,
            fix_file,
        )


def test_operator_retries_a_dead_job_from_the_dashboard(stack: Stack, tmp_path: Path) -> None:
    submitted = stack.http.post(
        "/v1/jobs",
        json={
            "type": "analytics-event",
            "name": "order.synced",
            "properties": {"mode": "fail-until-fixed"},
        },
        headers={"Authorization": f"Bearer {stack.tenant_key}"},
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    stack.wait_status(job_id, "dead")
    queues = list(load_topology(stack.topology_file, job_types=JOB_TYPES).queues)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with chromium() as browser:
        page, guard = new_page(browser, stack.gateway.base_url)
        page.goto(stack.gateway.url("/dashboard"))
        assert page.url.startswith(stack.gateway.url("/dashboard/login"))
        page.screenshot(path=str(shots / "01-login.png"))
        page.fill("#key", stack.operator_key)
        page.click("button[type=submit]")
        page.wait_for_url(stack.gateway.url("/dashboard"))
        for queue in queues:
            assert page.locator(f'tr[data-queue="{queue}"]').count() == 1, queue
        page.screenshot(path=str(shots / "02-queues.png"), full_page=True)

        page.click("text=Dead letters")
        page.wait_for_url("**/dashboard/dlq")
        page.click(f'a[href="/dashboard/jobs/{job_id}"]')
        page.wait_for_url(f"**/dashboard/jobs/{job_id}")
        assert page.locator("#job-status").inner_text() == "dead"
        assert "upstream down" in page.locator("#attempts").inner_text()
        page.screenshot(path=str(shots / "03-dead-job.png"), full_page=True)

        stack.fix_file.touch()  # the upstream is back
        page.click("#retry")
        page.wait_for_url(f"**/dashboard/jobs/{job_id}")
        # The page refreshes itself while the job is unfinished: wait for it to show success.
        deadline = time.monotonic() + WAIT_S
        status = ""
        while time.monotonic() < deadline:
            try:
                status = page.locator("#job-status").inner_text(timeout=5_000)
            except Exception:  # a refresh replaced the document mid-read
                continue
            if status == "succeeded":
                break
            time.sleep(0.5)
        assert status == "succeeded", f"the page still shows {status}\n{stack.consumer.output()}"
        page.screenshot(path=str(shots / "04-succeeded.png"), full_page=True)
        assert guard.urls, "no request was recorded"
        assert guard.foreign() == [], f"requests to other hosts: {guard.foreign()}"

    assert stack.job(job_id)["status"] == "succeeded"
    assert stack.job(job_id)["attempts"] >= 1
    assert sorted(p.name for p in shots.iterdir()) == [
        "01-login.png",
        "02-queues.png",
        "03-dead-job.png",
        "04-succeeded.png",
    ]


@pytest.fixture
def gateway(database: tuple[str, str | None], db_engine: object) -> Iterator[ServerProcess]:
    require_chromium()
    url, schema = database
    with jobgate_server("serve", env=jobgate_env(url, schema=schema)) as server:
        yield server


def test_api_docs_render_offline(gateway: ServerProcess, tmp_path: Path) -> None:
    with chromium() as browser:
        page, guard = new_page(browser, gateway.base_url)
        page.goto(gateway.url("/docs"))
        operation = page.locator(".opblock-summary-path", has_text="/v1/jobs").first
        operation.wait_for(state="visible")
        page.screenshot(path=str(tmp_path / "docs.png"))

        page.goto(gateway.url("/redoc"))
        page.locator("h2", has_text="Submit Job").first.wait_for(state="visible")
        page.screenshot(path=str(tmp_path / "redoc.png"))
        assert any(url.endswith("/swagger-ui-bundle.js") for url in guard.urls)
        assert any(url.endswith("/redoc.standalone.js") for url in guard.urls)
        assert guard.foreign() == [], f"requests to other hosts: {guard.foreign()}"
