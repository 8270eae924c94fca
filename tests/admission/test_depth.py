"""Watermarks, hysteresis and the measured drain rate, on a manual clock."""

from __future__ import annotations

import json

import httpx
import pytest

from app.admission.config import AdmissionSettings, Watermarks
from app.admission.depth import (
    CloudflareDepth,
    DepthMonitor,
    DrainMeter,
    each_queue,
    retry_after_seconds,
)
from app.admission.errors import AdmissionUnknown, QueueFull
from app.core.clock import ManualClock
from app.queues.base import QueueMetrics
from app.queues.cloudflare import CloudflareQueues


class Backlog:
    """A sample function whose answers the test sets (or makes fail)."""

    def __init__(self) -> None:
        self.values: dict[str, QueueMetrics] = {}
        self.failing = False

    def set(self, queue: str, messages: int, size: int = 0) -> None:
        self.values[queue] = QueueMetrics(messages, size, 1 if messages else 0)

    async def __call__(self, queue: str) -> QueueMetrics:
        if self.failing:
            raise ConnectionError("metrics endpoint down")
        return self.values.get(queue, QueueMetrics(0, 0, 0))


def _monitor(clock: ManualClock, backlog: Backlog, **settings: object) -> DepthMonitor:
    marks = {
        "a": Watermarks(high_messages=100, low_messages=50, high_bytes=10_000, low_bytes=5_000)
    }
    return DepthMonitor(
        ["a", "b"],
        settings=AdmissionSettings(watermarks=marks, **settings),  # type: ignore[arg-type]
        clock=clock,
        sample=each_queue(backlog),
    )


class TestDrainMeter:
    def test_rate_counts_arrivals_and_needs_a_second(self) -> None:
        meter = DrainMeter(window_ms=10_000)
        meter.add(0, backlog=100, arrivals=0)
        meter.add(500, backlog=90, arrivals=0)
        assert meter.rate() is None  # half a second of samples
        # 20 arrived and the backlog still fell by 10: 30 drained in 2 s.
        meter.add(2000, backlog=90, arrivals=20)
        assert meter.rate() == pytest.approx(15.0)

    def test_window_slides(self) -> None:
        meter = DrainMeter(window_ms=5000)
        meter.add(0, backlog=1000, arrivals=0)  # fast drain long ago
        meter.add(5000, backlog=100, arrivals=0)
        meter.add(10_000, backlog=90, arrivals=0)
        assert meter.rate() == pytest.approx(2.0)  # only the last 5 s count

    def test_retry_after_is_clamped_with_fallback(self) -> None:
        assert retry_after_seconds(100, 10.0, fallback=30) == 10
        assert retry_after_seconds(1, 1000.0, fallback=30) == 1
        assert retry_after_seconds(1_000_000, 1.0, fallback=30) == 300
        assert retry_after_seconds(50, None, fallback=30) == 30  # not measurable yet
        assert retry_after_seconds(50, 0.0, fallback=30) == 300  # measured: nothing drains


@pytest.mark.asyncio
class TestDepthMonitor:
    async def test_hysteresis_per_queue(self) -> None:
        clock, backlog = ManualClock(), Backlog()
        monitor = _monitor(clock, backlog)
        backlog.set("a", 99)
        await monitor.refresh()
        monitor.check("a")
        backlog.set("a", 100)
        await monitor.refresh()
        with pytest.raises(QueueFull):
            monitor.check("a")
        monitor.check("b")  # the other queue is open
        backlog.set("a", 51)
        await monitor.refresh()
        with pytest.raises(QueueFull):
            monitor.check("a")  # below high, above low: still closed
        backlog.set("a", 50)
        await monitor.refresh()
        monitor.check("a")
        backlog.set("a", 99)
        await monitor.refresh()
        monitor.check("a")  # open again until the high watermark

    async def test_bytes_close_too_and_retry_after_follows_the_drain(self) -> None:
        clock, backlog = ManualClock(), Backlog()
        monitor = _monitor(clock, backlog, retry_after_fallback_seconds=45)
        backlog.set("a", 40, size=12_000)  # few messages, but large ones
        await monitor.refresh()
        with pytest.raises(QueueFull) as first:
            monitor.check("a")
        assert first.value.retry_after == 45  # one sample: fallback
        clock.advance(seconds=4)
        backlog.set("a", 36, size=10_800)  # 1 msg/s of 300 bytes each
        await monitor.refresh()
        with pytest.raises(QueueFull) as measured:
            monitor.check("a")
        # 10,800 - 5,000 bytes over the low mark = 19.3 messages of 300 bytes, at 1 msg/s.
        assert measured.value.retry_after == 20
        assert "1.0 msg/s" in measured.value.detail

    async def test_admitted_between_samples_counts_and_is_an_arrival(self) -> None:
        clock, backlog = ManualClock(), Backlog()
        monitor = _monitor(clock, backlog)
        backlog.set("a", 90)
        await monitor.refresh()
        monitor.note_admitted("a", 10)
        with pytest.raises(QueueFull):
            monitor.check("a")
        # 10 arrived, and 2 s later the backlog is 80: 20 drained, 10 msg/s.
        clock.advance(seconds=2)
        backlog.set("a", 80)
        await monitor.refresh()
        with pytest.raises(QueueFull) as refused:
            monitor.check("a")
        assert refused.value.retry_after == 3  # (80 - 50) / 10

    async def test_failed_samples_go_stale_and_follow_the_policy(self) -> None:
        clock, backlog = ManualClock(), Backlog()
        strict = _monitor(clock, backlog, on_unknown="closed", stale_after_ms=3000)
        lenient = _monitor(clock, backlog, stale_after_ms=3000)
        with pytest.raises(AdmissionUnknown):
            strict.check("a")  # never sampled
        lenient.check("a")
        await strict.refresh()
        strict.check("a")
        backlog.failing = True
        clock.advance(seconds=2)
        await strict.refresh()
        strict.check("a")  # the last good sample is still fresh
        clock.advance(seconds=2)
        await strict.refresh()
        with pytest.raises(AdmissionUnknown) as unknown:
            strict.check("a")
        assert "metrics endpoint down" in unknown.value.detail

    async def test_outbox_rows_add_to_the_backlog(self) -> None:
        clock, backlog = ManualClock(), Backlog()

        async def pending() -> dict[str, tuple[int, int]]:
            return {"a": (60, 600)}

        monitor = DepthMonitor(
            ["a"],
            settings=AdmissionSettings(
                watermarks={"a": Watermarks(high_messages=100, low_messages=50)}
            ),
            clock=clock,
            sample=each_queue(backlog),
            pending=pending,
        )
        backlog.set("a", 40)
        await monitor.refresh()
        assert monitor.queues["a"].messages == 100
        with pytest.raises(QueueFull):
            monitor.check("a")


@pytest.mark.asyncio
class TestCloudflareDepth:
    async def test_uses_publish_metrics_and_polls_only_when_stale(self) -> None:
        calls: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request.url.path)
            metrics = {"backlog_count": 7, "backlog_bytes": 70, "oldest_message_timestamp_ms": 1}
            body = {"success": True, "errors": [], "messages": [], "result": metrics}
            return httpx.Response(200, content=json.dumps(body))

        base = "http://cf.test/client/v4/accounts/acc/queues"
        backend = CloudflareQueues(
            account_id="acc",
            api_token="token",
            base_url="http://cf.test/client/v4",
            http=httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=base),
        )
        backend._queue_ids = {"q": "0" * 32}  # as `start()` would resolve it
        clock = ManualClock()
        depth = CloudflareDepth(backend, clock, poll_ms=5000)
        try:
            first = await depth("q")  # nothing published yet: GET /metrics
            assert first.backlog_count == 7
            assert calls == [f"/client/v4/accounts/acc/queues/{'0' * 32}/metrics"]
            clock.advance(seconds=1)
            assert (await depth("q")).backlog_count == 7
            assert len(calls) == 1  # cached
            backend.last_metrics["q"] = QueueMetrics(3, 30, 1)  # a publish reported this
            assert (await depth("q")).backlog_count == 3
            assert len(calls) == 1
            clock.advance(seconds=5)
            assert (await depth("q")).backlog_count == 7
            assert len(calls) == 2  # stale: polled again
        finally:
            await backend.close()
