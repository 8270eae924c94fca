"""Metrics, logs and alert rules over real processes: `jobgate serve` + `jobgate consume`
(its metrics on its own port) on a SQLite file, running jobs that succeed, retry and die,
fail permanently, and hold their lease long enough to be extended.

One run (module fixture) is read by every test: the consumer's /metrics shows real counts,
every log line of both processes is JSON with its context and no secret, each job that ended
`failed` or `dead` logged once at WARNING with its reason, and each alert rule in
`deploy/alerts.yml` parses and names only metrics the processes really exposed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import REPO_ROOT
from tests.consumer.conftest import DLQ, QUEUE, write_topology
from tests.emulator.conftest import ACCOUNT, TOKEN, emulator_env, start_emulator
from tests.support.servers import (
    ServerProcess,
    create_tenant,
    db_upgrade,
    jobgate_argv,
    jobgate_env,
    jobgate_server,
)
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.slow

ALERTS = REPO_ROOT / "deploy" / "alerts.yml"
WAIT_S = 90.0
OK_JOBS = 3
REQUEST_ID = "e2e-request-0001"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Run:
    backend: str
    key: str
    tenant_id: str
    ok_ids: list[str]
    dead_id: str
    failed_id: str
    gateway_metrics: str
    consumer_metrics: str
    gateway_log: str
    consumer_log: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def _samples(*texts: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _job(http: httpx.Client, key: str, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module", params=["local", "cloudflare"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("obs")
    backend: str = request.param
    url = f"sqlite:///{tmp / 'jobgate.db'}"
    backend_env: dict[str, str] = {}
    emulator: ServerProcess | None = None
    if backend == "cloudflare":
        # The emulator keeps its queues in the same database file, as the local engine.
        emulator = start_emulator(emulator_env((url, None)))
        backend_env = {
            "JOBGATE_QUEUE_BACKEND": "cloudflare",
            "JOBGATE_CF_API_TOKEN": TOKEN,
            "JOBGATE_CF_ACCOUNT_ID": ACCOUNT,
            "JOBGATE_CF_API_BASE_URL": f"{emulator.base_url}/client/v4",
            "JOBGATE_OUTBOX_LINGER_MS": "0",
            "JOBGATE_OUTBOX_POLL_MS": "50",
        }
    try:
        yield _run(tmp, url, backend, backend_env)
    finally:
        if emulator is not None:
            emulator.close()


def _run(tmp: Path, url: str, backend: str, backend_env: dict[str, str]) -> Run:
    topology = write_topology(
        tmp / "wrangler.jsonc",
        {
            "max_batch_size": 10,
            "max_batch_timeout": 0,
            "max_retries": 1,
            "retry_delay": 0,
            "visibility_timeout_ms": 3000,
        },
    )
    block = tmp / "block"
    env = jobgate_env(
        url,
        extra={
            **backend_env,
            "JOBGATE_WRANGLER_CONFIG": str(topology),
            "JOBGATE_HANDLER_MODULES": "tests.consumer.e2e_handlers",
            "JOBGATE_CONSUMER_POLL_MIN_MS": "50",
            "JOBGATE_CONSUMER_POLL_MAX_MS": "200",
            "JOBGATE_CONSUMER_HEARTBEAT_MS": "100",
            "JOBGATE_METRICS_SAMPLE_SECONDS": "1",
            # Two failures in a row open the breaker of (tenant, analytics-event).
            "JOBGATE_BREAKER_THRESHOLD": "2",
            "JOBGATE_E2E_BLOCK_FILE": str(block),
            "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
            "JOBGATE_LOG_LEVEL": "info",
            "PYTHONPATH": str(REPO_ROOT),
        },
    )
    db_upgrade(env)
    tenant = create_tenant(env, "obs")
    key = tenant["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    consumer = ServerProcess(
        lambda port: jobgate_argv("consume", "--metrics-port", str(port)),
        env=env,
        ready_path="/metrics",
    )
    with jobgate_server("serve", env=env) as gateway, consumer:
        with httpx.Client(base_url=gateway.base_url, timeout=30) as http:

            def submit(body: dict[str, Any], **extra: str) -> str:
                response = http.post("/v1/jobs", json=body, headers={**headers, **extra})
                assert response.status_code == 202, response.text
                job_id: str = response.json()["id"]
                return job_id

            def scrape() -> str:
                return httpx.get(consumer.url("/metrics"), timeout=10).text

            def status(job_id: str) -> str:
                return str(_job(http, key, job_id)["status"])

            def wait(what: str, check: Any) -> None:
                wait_until_sync(
                    check,
                    timeout=WAIT_S,
                    interval=0.1,
                    message=lambda: f"timed out: {what}\n{gateway.output()}\n{consumer.output()}",
                )

            event = {"type": "analytics-event", "name": "obs"}
            # A run that holds its lease while the heartbeat extends it.
            ok_ids = []
            if backend == "local":
                # A run that holds its lease while the heartbeat extends it (Cloudflare has
                # no lease extension).
                block.touch()
                ok_ids.append(submit({**event, "properties": {"mode": "block"}}))
                wait("a lease extension", lambda: "jobgate_lease_extensions_total{" in scrape())
                block.unlink()
            ok_ids += [
                submit(
                    {**event, "properties": {"mode": "ok"}},
                    **{"X-Request-ID": REQUEST_ID, "traceparent": TRACEPARENT},
                )
                for _ in range(OK_JOBS - len(ok_ids))
            ]
            wait("the ok jobs", lambda: all(status(j) == "succeeded" for j in ok_ids))
            dead_id = submit({**event, "properties": {"mode": "fail"}})
            # Not prestashop-sync: its 30 s batch timeout outlasts a Cloudflare lease.
            failed_id = submit({"type": "agent-task", "agentType": "obs", "dryRun": True})
            wait("a dead job", lambda: status(dead_id) == "dead")
            wait("a failed job", lambda: status(failed_id) == "failed")
            wait(
                "the DLQ sample",
                lambda: f'jobgate_dlq_backlog_messages{{queue="{DLQ}"}} 1.0' in scrape(),
            )
            wait("the breaker sample", lambda: "jobgate_breaker_state{" in scrape())
            gateway_metrics = http.get("/metrics").text
            consumer_metrics = scrape()
        # Stopped gracefully first, so their logs are whole.
        gateway.terminate()
        consumer.terminate()
        gateway_log, consumer_log = gateway.log_text(), consumer.log_text()
    return Run(
        backend=backend,
        key=key,
        tenant_id=tenant["tenant_id"],
        ok_ids=ok_ids,
        dead_id=dead_id,
        failed_id=failed_id,
        gateway_metrics=gateway_metrics,
        consumer_metrics=consumer_metrics,
        gateway_log=gateway_log,
        consumer_log=consumer_log,
        samples=_samples(gateway_metrics, consumer_metrics),
    )


def _lines(text: str) -> list[dict[str, Any]]:
    """Every line of a process's stderr, each parsed as one JSON object."""
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        parsed.append(record)
    return parsed


def test_consumer_metrics_show_real_counts(run: Run) -> None:
    event = {"type": "analytics-event"}
    assert run.value("jobgate_jobs_started_total", **event) >= OK_JOBS + 2  # + 2 doomed attempts
    assert run.value("jobgate_jobs_succeeded_total", **event) == OK_JOBS
    assert run.value("jobgate_jobs_retried_total", **event) >= 1
    assert run.value("jobgate_jobs_dead_total", **event) == 1
    assert run.value("jobgate_jobs_failed_total", type="agent-task") == 1
    assert run.value("jobgate_job_handler_duration_seconds_count", **event) >= OK_JOBS + 2
    assert run.value("jobgate_job_handler_duration_seconds_sum", **event) > 0
    assert run.value("jobgate_dlq_backlog_messages", queue=DLQ) == 1
    assert run.value("jobgate_dlq_oldest_message_age_seconds", queue=DLQ) >= 0
    assert ("jobgate_queue_backlog_messages", frozenset({("queue", QUEUE)})) in run.samples
    assert run.value("jobgate_consumer_last_pull_timestamp_seconds", queue=QUEUE) > 1.7e9
    if run.backend == "local":
        assert run.value("jobgate_lease_extensions_total", queue=QUEUE) >= 1
    breaker = {"tenant": run.tenant_id, "type": "analytics-event"}
    assert run.value("jobgate_breaker_state", **breaker) == 2  # open
    # The gateway exports the outbox gauges (0: the local engine has no outbox).
    assert ("jobgate_outbox_pending_messages", frozenset()) in run.samples


def test_every_log_line_is_json_with_its_context_and_no_secret(run: Run) -> None:
    gateway, consumer = _lines(run.gateway_log), _lines(run.consumer_log)
    assert gateway
    assert consumer
    for text in (run.gateway_log, run.consumer_log):
        assert run.key not in text
        assert run.key.split("_", 2)[2] not in text  # nor its secret part alone
    # The access log is on, in the same JSON, with the request id and the tenant.
    access = [r for r in gateway if r["logger"] == "uvicorn.access"]
    posted = [r for r in access if r.get("request_id") == REQUEST_ID]
    traced = OK_JOBS - 1 if run.backend == "local" else OK_JOBS  # the block job: untraced
    assert len(posted) == traced, access
    assert all(r["method"] == "POST" and r["path"] == "/v1/jobs" for r in posted)
    assert all(r["status"] == 202 and r["tenant_id"] == run.tenant_id for r in posted)
    # Every other request got its own id.
    assert all(r.get("request_id") for r in access)
    # No per-request INFO lines from the consumer's HTTP client.
    assert not [r for r in gateway + consumer if r["logger"].startswith(("httpx", "httpcore"))]


def test_failed_and_dead_jobs_log_once_at_warning_with_their_reason(run: Run) -> None:
    consumer = _lines(run.consumer_log)

    def about(job_id: str) -> list[dict[str, Any]]:
        return [r for r in consumer if r.get("job_id") == job_id]

    dead = [r for r in about(run.dead_id) if r["level"] == "WARNING"]
    assert len(dead) == 1, about(run.dead_id)
    assert dead[0]["outcome"] == "dead"
    assert "always fails" in dead[0]["reason"]
    assert "dead" in dead[0]["message"]
    assert "always fails" in dead[0]["message"]
    assert dead[0]["queue"] == QUEUE
    assert dead[0]["tenant_id"] == run.tenant_id
    # The attempt before it was a retry, logged at INFO.
    retries = [r for r in about(run.dead_id) if r.get("outcome") == "retry"]
    assert [r["level"] for r in retries] == ["INFO"]

    failed = [r for r in about(run.failed_id) if r["level"] == "WARNING"]
    assert len(failed) == 1, about(run.failed_id)
    assert failed[0]["outcome"] == "failed"
    assert "do not run agent-task" in failed[0]["reason"]
    # Succeeded jobs log nothing at WARNING or above.
    for job_id in run.ok_ids:
        assert not [r for r in about(job_id) if r["level"] in ("WARNING", "ERROR")]


# -- alert rules ------------------------------------------------------------------------------

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not a function
    (followed by `(`), a keyword, a label name (inside `{}` or after by/without/on/...)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    # Not preceded by a digit or dot: the unit of `5m`, the exponent of `1e9`.
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_metric_name_reader_sees_through_promql() -> None:
    expr = (
        'time() - max by (queue) (max_over_time(a_seconds{queue="x(y)"}[1h])) > 120 '
        "and on (queue) b_total offset 5m unless histogram_quantile(0.9, sum by (le) "
        "(rate(c_bucket[5m])))"
    )
    assert metric_names(expr) == {"a_seconds", "b_total", "c_bucket"}


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout
    # The example scrape configuration loads the rules too.
    config = ALERTS.with_name("prometheus.yml")
    done = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_each_alert_names_only_metrics_the_processes_exposed(run: Run) -> None:
    exposed = {name for name, _ in run.samples}
    rules = _rules()
    assert {rule["alert"] for rule in rules} >= {
        "JobgateDeadLetterQueueGrowing",
        "JobgateQueueOldestMessageTooOld",
        "JobgateOutboxStuck",
        "JobgateBreakerOpen",
        "JobgateConsumerNotPulling",
    }
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, rule
        assert names <= exposed, (rule["alert"], names - exposed)


def test_jobgate_dev_gateway_metrics_include_the_consumer_child(tmp_path: Path) -> None:
    """`make run` users curl the gateway: its /metrics shows the consumer child's too, and
    dev logs are text for the terminal."""
    topology = write_topology(
        tmp_path / "wrangler.jsonc", {"max_batch_size": 1, "max_batch_timeout": 0}
    )
    env = jobgate_env(
        f"sqlite:///{tmp_path / 'jobgate.db'}",
        extra={
            "JOBGATE_WRANGLER_CONFIG": str(topology),
            "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
            "JOBGATE_CONSUMER_POLL_MAX_MS": "200",
            "JOBGATE_LOG_LEVEL": "info",
        },
    )
    with ServerProcess(jobgate_argv("dev"), env=env, startup_timeout=90) as dev:
        match = re.search(r"JOBGATE_KEY=(jg_\S+)", dev.output())
        assert match, dev.output()
        headers = {"Authorization": f"Bearer {match.group(1)}"}
        with httpx.Client(base_url=dev.base_url, timeout=30) as http:
            job = {"type": "analytics-event", "name": "signup", "properties": {}}
            made = http.post("/v1/jobs", json=job, headers=headers)
            assert made.status_code == 202, made.text
            wanted = 'jobgate_jobs_succeeded_total{type="analytics-event"} 1.0'
            wait_until_sync(
                lambda: wanted in http.get("/metrics").text,
                timeout=WAIT_S,
                interval=0.2,
                message=lambda: f"{http.get('/metrics').text}\n{dev.output()}",
            )
            text = http.get("/metrics").text
        dev.terminate()
        log = dev.log_text()
    # Both processes' families, each once (the exposition stays valid).
    families = {family.name for family in text_string_to_metric_families(text)}
    both = {"jobgate_jobs_accepted", "jobgate_jobs_succeeded", "jobgate_outbox_pending_messages"}
    assert both <= families
    assert text.count("# TYPE jobgate_jobs_succeeded_total counter") == 1
    # Text lines for a terminal: the access line of the submission, not JSON.
    access = [line for line in log.splitlines() if "uvicorn.access POST /v1/jobs 202" in line]
    assert access, log
    assert not access[0].startswith("{")
    # The dev key is shown once, on purpose; no log line repeats it.
    assert log.count(match.group(1)) == 1


def test_a_taken_metrics_port_is_one_error_line(tmp_path: Path) -> None:
    env = jobgate_env(f"sqlite:///{tmp_path / 'jobgate.db'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            jobgate_argv("consume", "--metrics-port", str(port)),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"]
    assert "Traceback" not in done.stderr
