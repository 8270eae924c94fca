"""The log formatter and the request context, in-process (the real processes' output is read
in test_end_to_end.py)."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import build_runtime
from app.core.clock import ManualClock
from app.main import create_app
from app.observability import logs
from app.settings import Settings
from tests.factories import TenantFactory, auth
from tests.support.asgi import asgi_client

KEY = "jg_ab12cd34_Zx9-secretpart_0123456789"
OPERATOR_KEY = "jgo_ab12cd34_another-secret"


def _record(message: str, *args: object, name: str = "jobgate.test", **extra: object) -> str:
    record = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return logs.JsonFormatter().format(record)


@pytest.mark.parametrize(
    "leak",
    [
        f"calling with {KEY}",
        f"operator {OPERATOR_KEY} used",
        "Authorization: Bearer abc.def.ghi",
        "webhook secret whsec_c2VjcmV0LXNpZ25pbmc=",
        'sent {"api_key": "k-123456", "password": "hunter2"}',
        "cookie=jobgate_session%3Dabc; csrf_token=xyz",
    ],
)
def test_secrets_are_masked_in_messages(leak: str) -> None:
    line = json.loads(_record(leak))
    for secret in (
        "secretpart",
        "another-secret",
        "abc.def.ghi",
        "c2VjcmV0",
        "k-123456",
        "hunter2",
        "abc;",
        "xyz",
    ):
        assert secret not in line["message"]
    assert logs.MASK in line["message"]


def test_a_record_carries_the_context_and_its_extra_fields() -> None:
    with logs.job_context(job_id="j1", queue="q1", tenant_id="t1"):
        line = json.loads(_record("job %s dead: %s", "j1", "boom", outcome="dead", reason="boom"))
    assert line["level"] == "WARNING"
    assert line["message"] == "job j1 dead: boom"
    assert (line["job_id"], line["queue"], line["tenant_id"]) == ("j1", "q1", "t1")
    assert (line["outcome"], line["reason"]) == ("dead", "boom")
    # Outside the block the context is gone.
    assert "job_id" not in json.loads(_record("later"))


def test_uvicorn_access_records_become_fields_with_the_query_masked() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/jobs?token=abc&limit=5", "1.1", 200),
        None,
    )
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert line["path"] == f"/v1/jobs?token={logs.MASK}&limit=5"
    assert "abc" not in line["message"]


def test_text_format_is_one_line_with_key_values() -> None:
    record = logging.LogRecord("jobgate.x", logging.INFO, __file__, 1, "hello", None, None)
    record.__dict__["job_id"] = "j9"
    text = logs.TextFormatter().format(record)
    assert "\n" not in text
    assert text.endswith(" INFO    jobgate.x hello job_id=j9")


def test_configure_logging_quiets_httpx_and_keeps_one_handler() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure_logging("info", "json")
        logs.configure_logging("debug", "text")
        assert len(root.handlers) == 1
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        assert handler.stream is sys.stderr
        assert isinstance(handler.formatter, logs.TextFormatter)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("uvicorn.access").propagate
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.asyncio
async def test_every_response_carries_a_request_id(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> None:
    runtime = build_runtime(settings, clock=clock, engine=db_engine)
    tenant = await TenantFactory(runtime).create()
    async with asgi_client(create_app(runtime=runtime)) as client:
        given = await client.get(
            "/v1/jobs", headers={**auth(tenant.api_key), "X-Request-ID": "abc-123"}
        )
        made = await client.get("/v1/jobs/nope", headers=auth(tenant.api_key))
        # Not a sane token (spaces, too long): replaced by one of ours.
        odd = await client.get("/healthz", headers={"X-Request-ID": "a b" + "x" * 200})
    await runtime.queue_engine.close()
    assert given.headers["x-request-id"] == "abc-123"
    assert made.status_code == 404
    assert len(made.headers["x-request-id"]) == 16
    assert odd.headers["x-request-id"] != "a b" + "x" * 200
