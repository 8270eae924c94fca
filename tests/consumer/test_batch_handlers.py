"""Batch handlers: one call per pulled batch's jobs of a type, an outcome per job, settled
with the same retry, dead-letter, breaker and progress rules as single handlers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from app.consumer.registry import (
    BatchOutcomes,
    HandlerRegistry,
    JobContext,
    PermanentFailure,
    RetryLater,
)
from app.jobs.payloads import AnalyticsEventPayload
from tests.consumer.conftest import DLQ, MakeHarness
from tests.factories import auth

pytestmark = pytest.mark.asyncio
TYPE = "analytics-event"


class TestBatchHandlers:
    async def test_one_call_and_an_outcome_per_job(self, make_harness: MakeHarness) -> None:
        registry = HandlerRegistry()
        calls: list[list[str]] = []

        @registry.batch_handler(TYPE, AnalyticsEventPayload)
        async def handle(
            batch: Sequence[JobContext[AnalyticsEventPayload]],
        ) -> BatchOutcomes | None:
            calls.append([ctx.payload.properties["kind"] for ctx in batch])
            outcomes: dict[str, BaseException] = {}
            for ctx in batch:
                kind = ctx.payload.properties["kind"]
                if kind == "later":
                    outcomes[ctx.job_id] = RetryLater(7, "rate limited")
                elif kind == "bad":
                    outcomes[ctx.job_id] = PermanentFailure("bad input")
                elif kind == "broken":
                    outcomes[ctx.job_id] = RuntimeError("downstream 503")
                else:
                    await ctx.progress(50, "half way")
            return outcomes

        h = await make_harness(registry, max_batch_size=10, max_retries=1, retry_delay=5)
        kinds = ["ok", "later", "bad", "broken"] * 2
        ids = [await h.submit(kind=kind) for kind in kinds]
        report = await h.consumer.run_once()
        assert len(calls) == 1
        assert sorted(calls[0]) == sorted(kinds)
        assert report.counts == {"succeeded": 2, "retry": 4, "failed": 2}
        jobs = {kind: await h.job(job_id) for kind, job_id in zip(kinds, ids, strict=False)}
        assert jobs["ok"].status == "succeeded"
        assert jobs["bad"].status == "failed"
        assert "bad input" in (jobs["bad"].last_error or "")
        assert jobs["later"].status == "retrying"
        assert jobs["broken"].status == "retrying"
        [later] = await h.attempts(ids[1])
        assert (later.outcome, later.retry_delay_seconds) == ("retry", 7)
        [broken] = await h.attempts(ids[3])
        assert broken.retry_delay_seconds == 5
        # Progress was recorded per job while the batch ran.
        assert await h.statuses(ids[0]) == ["queued", "running", "succeeded"]

        # Second deliveries: the "later" ones after 7 s, the broken ones die (max_retries 1).
        h.clock.advance(seconds=7)
        report = await h.consumer.run_once()
        assert len(calls) == 2
        assert sorted(calls[1]) == ["broken", "broken", "later", "later"]
        assert report.counts == {"dead": 4}
        assert (await h.job(ids[3])).status == "dead"
        assert len(await h.messages(DLQ)) == 4
        assert await h.messages() == []

    async def test_raising_applies_to_every_job_of_the_call(
        self, make_harness: MakeHarness
    ) -> None:
        registry = HandlerRegistry()
        sizes: list[int] = []

        @registry.batch_handler(TYPE, AnalyticsEventPayload)
        async def handle(
            batch: Sequence[JobContext[AnalyticsEventPayload]],
        ) -> BatchOutcomes | None:
            sizes.append(len(batch))
            if len(sizes) == 1:
                raise RuntimeError("database down")
            return None

        # The breaker counts each job's failure: kept out of the way here.
        h = await make_harness(
            registry,
            max_batch_size=100,
            retry_delay=0,
            settings_update={"breaker": {"threshold": 1000}},
        )
        response = await h.client.post(
            "/v1/jobs/batch",
            json={"jobs": [{"type": TYPE, "name": "e"}] * 30},
            headers=auth(h.keys["a"]),
        )
        assert response.status_code == 202
        assert (await h.consumer.run_once()).counts == {"retry": 30}
        assert (await h.consumer.run_once()).counts == {"succeeded": 30}
        assert sizes == [30, 30]

    async def test_an_invalid_payload_fails_without_reaching_the_handler(
        self, make_harness: MakeHarness
    ) -> None:
        registry = HandlerRegistry()
        seen: list[int] = []

        @registry.batch_handler(TYPE, AnalyticsEventPayload)
        async def handle(
            batch: Sequence[JobContext[AnalyticsEventPayload]],
        ) -> BatchOutcomes | None:
            seen.append(len(batch))
            return None

        h = await make_harness(registry)
        good = await h.submit()
        bad = await h.submit()
        # Stored before the model changed: a name the model refuses today.
        async with h.runtime.sessionmaker() as session:
            from sqlalchemy import update

            from app.queues.models import QueueMessage

            rows = await h.messages()
            target = next(m for m in rows if bad in m.body)
            await session.execute(
                update(QueueMessage)
                .where(QueueMessage.id == target.id)  # type: ignore[arg-type]
                .values(body=target.body.replace('"name":"e"', '"name":""'))
            )
            await session.commit()
        report = await h.consumer.run_once()
        assert report.counts == {"succeeded": 1, "failed": 1}
        assert seen == [1]
        assert (await h.job(good)).status == "succeeded"
        assert (await h.job(bad)).status == "failed"
