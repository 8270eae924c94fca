"""Handlers get their job's payload model; a stored payload that no longer validates fails the
job once, with the reason, without running the handler."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from app.consumer.models import CircuitBreaker
from app.consumer.registry import HandlerRegistry, InvalidPayload, JobContext
from app.jobs.payloads import AnalyticsEventPayload
from app.queues.models import QueueMessage
from tests.consumer.conftest import DLQ, QUEUE, Harness, MakeHarness
from tests.factories import auth

pytestmark = pytest.mark.asyncio
TYPE = "analytics-event"


async def rewrite_stored_payload(h: Harness, payload: dict[str, object]) -> None:
    """Replace the payload of the one message waiting on the queue (as if it was stored by an
    older version whose model has changed since)."""
    async with h.runtime.sessionmaker() as session:
        rows = await session.execute(select(QueueMessage).where(QueueMessage.queue == QUEUE))
        [message] = rows.scalars().all()
        body = json.loads(message.body)
        body["payload"] = payload
        message.body = json.dumps(body)
        await session.commit()


async def test_a_handler_gets_its_model_instance(make_harness: MakeHarness) -> None:
    registry = HandlerRegistry()
    seen: list[AnalyticsEventPayload] = []

    @registry.handler(TYPE, AnalyticsEventPayload)
    async def record(ctx: JobContext[AnalyticsEventPayload]) -> None:
        seen.append(ctx.payload)

    h = await make_harness(registry)
    body = {
        "type": TYPE,
        "name": "order.paid",
        "properties": {"total": 12},
        "occurredAt": "2026-03-01T11:00:00+01:00",
    }
    response = await h.client.post("/v1/jobs", json=body, headers=auth(h.keys["a"]))
    assert response.status_code == 202, response.text
    assert (await h.consumer.run_once()).counts["succeeded"] == 1
    [payload] = seen
    assert type(payload) is AnalyticsEventPayload
    assert payload.name == "order.paid"
    assert payload.properties == {"total": 12}
    # Parsed from the stored JSON string into the model's type.
    assert payload.occurredAt == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


async def test_an_invalid_stored_payload_fails_after_one_attempt(
    make_harness: MakeHarness,
) -> None:
    registry = HandlerRegistry()
    runs: list[str] = []

    @registry.handler(TYPE, AnalyticsEventPayload)
    async def record(ctx: JobContext[AnalyticsEventPayload]) -> None:
        runs.append(ctx.job_id)

    h = await make_harness(registry, max_retries=3)
    job_id = await h.submit()
    await rewrite_stored_payload(h, {"name": "e", "props": {}})
    report = await h.consumer.run_once()
    assert report.counts["failed"] == 1
    assert runs == []  # the handler never saw it
    job = await h.job(job_id)
    reason = (
        "invalid analytics-event payload (AnalyticsEventPayload): "
        "props: Extra inputs are not permitted"
    )
    assert (job.status, job.attempts, job.last_error) == ("failed", 1, reason)
    [attempt] = await h.attempts(job_id)
    assert (attempt.outcome, attempt.error) == ("failed", reason)
    # Acked, not retried and not dead-lettered: no delivery could ever succeed.
    assert await h.messages() == []
    assert await h.messages(DLQ) == []
    assert await h.statuses(job_id) == ["queued", "running", "failed"]


async def test_invalid_payloads_do_not_open_the_breaker(make_harness: MakeHarness) -> None:
    """They say nothing about the downstream the breaker protects."""
    registry = HandlerRegistry()

    @registry.handler(TYPE, AnalyticsEventPayload)
    async def record(ctx: JobContext[AnalyticsEventPayload]) -> None:
        del ctx

    h = await make_harness(
        registry, settings_update={"breaker": {"threshold": 1, "cooldown_seconds": 60}}
    )
    for _ in range(2):
        await h.submit()
        await rewrite_stored_payload(h, {"name": ""})
        assert (await h.consumer.run_once()).counts["failed"] == 1
    valid = await h.submit()
    assert (await h.consumer.run_once()).counts == {"succeeded": 1}  # not deferred
    assert (await h.job(valid)).status == "succeeded"
    async with h.runtime.sessionmaker() as session:
        row = await session.get(CircuitBreaker, (h.tenant_ids["a"], TYPE))
        assert row is None or row.failures == 0


class Many(BaseModel):
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int
    g: int


async def test_the_reason_names_the_first_problems_only() -> None:
    registry = HandlerRegistry()

    @registry.handler("many", Many)
    async def handle(ctx: JobContext[Many]) -> None:
        del ctx

    spec = registry.get("many")
    assert spec is not None
    with pytest.raises(InvalidPayload) as raised:
        spec.parse({"a": "x"})
    assert str(raised.value) == (
        "invalid many payload (Many): a: Input should be a valid integer, unable to parse "
        "string as an integer; b: Field required; c: Field required; d: Field required; "
        "e: Field required; and 2 more"
    )
