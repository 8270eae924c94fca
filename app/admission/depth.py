"""Queue-depth backpressure: watermarks with hysteresis and a measured drain rate.

A background sampler (`DepthMonitor.run`, one per gateway) reads each routed queue's backlog
every `sample_interval_ms`: from the local engine's counter rows (`stored()`, no scan), or
for Cloudflare from the metrics every publish returns (free) and otherwise `GET .../metrics`
at most every `cf_metrics_poll_ms`; with the outbox, its unpublished rows of the queue (its
counter rows too) are added (accepted but not yet in Cloudflare). The request path only
reads memory: no query, no API call.

Between samples the gateway adds what it admitted itself, so a burst cannot overshoot the
high watermark by a whole sampling interval. A queue closes when its backlog (messages or
bytes) reaches the high watermark and reopens only once both are at or below the low one.

Retry-After = time to drain from the current backlog to the low watermark at the drain rate
measured over the last `drain_window_ms` (backlog decrease plus arrivals), clamped to
[1, 300] s; with fewer than a second of samples, `retry_after_fallback_seconds`; a measured
rate of zero (nothing drains) gives the 300 s maximum.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from app.admission.config import (
    MAX_RETRY_AFTER_SECONDS,
    MIN_RETRY_AFTER_SECONDS,
    AdmissionSettings,
    Watermarks,
)
from app.admission.errors import AdmissionUnknown, QueueFull
from app.core.clock import Clock
from app.core.periodic import run_every
from app.observability import metrics
from app.queues.base import QueueMetrics
from app.queues.cloudflare import CloudflareQueues

logger = logging.getLogger(__name__)

# A drain rate needs samples spanning at least this long.
MIN_SPAN_MS = 1000
# How long an admitted job may take to be stored (group commit under load). A sample taken
# within that time of an admission may miss its job, so the job still counts on top of it:
# the estimate errs high by at most this window's admissions, never low.
COMMIT_GRACE_MS = 2000

SampleFn = Callable[[str], Awaitable[QueueMetrics]]
# Every queue's backlog in one call, or why that queue's is unknown.
SampleAllFn = Callable[[Sequence[str]], Awaitable[Mapping[str, QueueMetrics | Exception]]]
PendingFn = Callable[[], Awaitable[Mapping[str, tuple[int, int]]]]


def clamp_retry_after(seconds: float) -> int:
    return int(min(MAX_RETRY_AFTER_SECONDS, max(MIN_RETRY_AFTER_SECONDS, math.ceil(seconds))))


def retry_after_seconds(excess: float, rate: float | None, fallback: int) -> int:
    """Seconds to drain `excess` items at `rate` items/s (None: not measurable yet)."""
    if excess <= 0:
        return MIN_RETRY_AFTER_SECONDS
    if rate is None:
        return fallback
    if rate <= 0:
        return MAX_RETRY_AFTER_SECONDS
    return clamp_retry_after(excess / rate)


@dataclass(frozen=True, slots=True)
class _Sample:
    at_ms: int
    backlog: int
    arrivals: int  # cumulative items known to have arrived, at sampling time


class DrainMeter:
    """Drain rate of a backlog, from successive samples over a sliding window.

    Drained between two samples = the backlog's decrease + what arrived meanwhile (as far as
    this process knows; arrivals it cannot see make the rate, and so Retry-After,
    conservative).
    """

    def __init__(self, window_ms: int) -> None:
        self._window_ms = window_ms
        self._samples: deque[_Sample] = deque()

    def add(self, at_ms: int, backlog: int, arrivals: int) -> None:
        if self._samples and at_ms <= self._samples[-1].at_ms:
            self._samples.pop()  # same instant: keep the newest reading
        self._samples.append(_Sample(at_ms, backlog, arrivals))
        # Keep the newest sample at or before the window start, so the span covers the window.
        while len(self._samples) > 2 and self._samples[1].at_ms <= at_ms - self._window_ms:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Items per second; None while the samples span less than a second."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        span = last.at_ms - first.at_ms
        if span < MIN_SPAN_MS:
            return None
        drained = first.backlog - last.backlog + (last.arrivals - first.arrivals)
        return max(0.0, drained) * 1000 / span


@dataclass(slots=True)
class QueueDepth:
    """What this gateway knows about one queue's backlog, and whether it admits."""

    queue: str
    marks: Watermarks
    meter: DrainMeter
    open: bool = True
    messages: int = 0
    bytes: int = 0
    sampled_ms: int | None = None
    admitted_total: int = 0
    admitted_at_sample: int = 0
    error: str | None = field(default=None)
    # (at_ms, count) of the admissions of the last COMMIT_GRACE_MS, oldest first.
    recent: deque[list[int]] = field(default_factory=deque)

    def note_admitted(self, at_ms: int, count: int) -> None:
        self.admitted_total += count
        if self.recent and self.recent[-1][0] == at_ms:
            self.recent[-1][1] += count
        else:
            self.recent.append([at_ms, count])
        self._forget_settled(at_ms)

    def settled_total(self, now_ms: int) -> int:
        """Admissions surely stored by now: all but those of the last COMMIT_GRACE_MS, which
        may still sit between admission and commit, so a sample taken now may miss them."""
        self._forget_settled(now_ms)
        return self.admitted_total - sum(count for _, count in self.recent)

    def _forget_settled(self, now_ms: int) -> None:
        while self.recent and self.recent[0][0] <= now_ms - COMMIT_GRACE_MS:
            self.recent.popleft()

    def estimate(self) -> tuple[int, int]:
        """(messages, bytes): the last sample plus what was admitted here since."""
        extra = self.admitted_total - self.admitted_at_sample
        average = self.bytes / self.messages if self.messages else 0.0
        return self.messages + extra, self.bytes + int(extra * average)

    def observe(
        self, at_ms: int, messages: int, size: int, admitted_before: int, settled_before: int
    ) -> None:
        """A sample taken when `admitted_before` jobs had been admitted here, of which
        `settled_before` were surely stored."""
        self.messages, self.bytes, self.sampled_ms = messages, size, at_ms
        # Jobs admitted while the sample was in flight, or not yet stored when it started,
        # may not be in it: count them as extra.
        self.admitted_at_sample = settled_before
        self.error = None
        self.meter.add(at_ms, messages, admitted_before)
        self.update()

    def update(self) -> None:
        messages, size = self.estimate()
        marks = self.marks
        if self.open and (messages >= marks.high_messages or size >= marks.high_bytes):
            self.open = False
            logger.warning(
                "queue %s closed: %d messages, %d bytes (high %d / %d)",
                self.queue,
                messages,
                size,
                marks.high_messages,
                marks.high_bytes,
            )
        elif not self.open and messages <= marks.low_messages and size <= marks.low_bytes:
            self.open = True
            logger.info("queue %s reopened: %d messages, %d bytes", self.queue, messages, size)

    def retry_after(self, fallback: int) -> int:
        messages, size = self.estimate()
        excess = messages - self.marks.low_messages
        if size > self.marks.low_bytes and messages:
            # Bytes drain with messages: express the byte excess in average messages.
            excess = max(excess, math.ceil((size - self.marks.low_bytes) / (size / messages)))
        return retry_after_seconds(excess, self.meter.rate(), fallback)


class CloudflareDepth:
    """Backlog of a Cloudflare queue: the metrics of the latest publish or pull when there
    is a new one, else `GET .../metrics` at most every `poll_ms`."""

    def __init__(self, backend: CloudflareQueues, clock: Clock, *, poll_ms: int) -> None:
        self._backend = backend
        self._clock = clock
        self._poll_ms = poll_ms
        self._seen: dict[str, QueueMetrics] = {}
        self._fetched_ms: dict[str, int] = {}

    async def __call__(self, queue: str) -> QueueMetrics:
        now = self._clock.now_ms()
        latest = self._backend.last_metrics.get(queue)
        if latest is not None and latest is not self._seen.get(queue):
            self._seen[queue], self._fetched_ms[queue] = latest, now
            return latest
        seen = self._seen.get(queue)
        if seen is not None and now - self._fetched_ms[queue] < self._poll_ms:
            return seen
        fetched = await self._backend.metrics(queue)
        self._seen[queue], self._fetched_ms[queue] = fetched, now
        return fetched


def each_queue(sample: SampleFn) -> SampleAllFn:
    """A per-queue sampler as a `SampleAllFn`: one queue's failure leaves the others'."""

    async def sample_all(queues: Sequence[str]) -> dict[str, QueueMetrics | Exception]:
        sampled: dict[str, QueueMetrics | Exception] = {}
        for queue in queues:
            try:
                sampled[queue] = await sample(queue)
            except Exception as exc:
                sampled[queue] = exc
        return sampled

    return sample_all


class DepthMonitor:
    """Samples queue backlogs in the background and decides, in memory, which queues admit."""

    def __init__(
        self,
        queues: Iterable[str],
        *,
        settings: AdmissionSettings,
        clock: Clock,
        sample: SampleAllFn,
        pending: PendingFn | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._sample = sample
        self._pending = pending
        self._stop = asyncio.Event()
        self.queues: dict[str, QueueDepth] = {
            name: QueueDepth(
                queue=name,
                marks=settings.watermarks_for(name),
                meter=DrainMeter(settings.drain_window_ms),
            )
            for name in sorted(set(queues))
        }

    async def refresh(self) -> None:
        """Take one sample of every queue (errors leave a queue's last sample to go stale)."""
        extra: Mapping[str, tuple[int, int]] = {}
        if self._pending is not None:
            try:
                extra = await self._pending()
            except Exception as exc:
                logger.warning("admission: outbox backlog unavailable: %s", exc)
                for depth in self.queues.values():
                    depth.error = f"outbox backlog unavailable: {exc}"
                return
        now = self._clock.now_ms()
        before = {
            name: (depth.admitted_total, depth.settled_total(now))
            for name, depth in self.queues.items()
        }
        try:
            samples = await self._sample(list(self.queues))
        except Exception as exc:
            samples = dict.fromkeys(self.queues, exc)
        for depth in self.queues.values():
            admitted_before, settled_before = before[depth.queue]
            sampled = samples.get(depth.queue)
            if not isinstance(sampled, QueueMetrics):
                error = sampled or RuntimeError("not sampled")
                depth.error = str(error) or type(error).__name__
                logger.warning("admission: depth of %s unavailable: %s", depth.queue, depth.error)
                continue
            more_messages, more_bytes = extra.get(depth.queue, (0, 0))
            depth.observe(
                self._clock.now_ms(),
                sampled.backlog_count + more_messages,
                sampled.backlog_bytes + more_bytes,
                admitted_before,
                settled_before,
            )
            metrics.admission_queue_backlog.labels(queue=depth.queue).set(depth.messages)
            metrics.admission_queue_open.labels(queue=depth.queue).set(1 if depth.open else 0)

    def check(self, queue: str) -> None:
        """Raise `QueueFull` while `queue` is closed (`AdmissionUnknown` if fail-closed)."""
        depth = self.queues.get(queue)
        if depth is None:
            return
        settings = self._settings
        now = self._clock.now_ms()
        if depth.sampled_ms is None or now - depth.sampled_ms > settings.stale_after_ms:
            if settings.on_unknown == "closed":
                why = f": {depth.error}" if depth.error else ""
                raise AdmissionUnknown(
                    f"the backlog of queue {queue} is unknown{why}; refusing until it is measured",
                    retry_after=settings.retry_after_fallback_seconds,
                )
            return
        depth.update()
        if depth.open:
            return
        messages, size = depth.estimate()
        rate = depth.meter.rate()
        pace = f"draining at {rate:.1f} msg/s" if rate is not None else "drain rate not measured"
        marks = depth.marks
        raise QueueFull(
            f"queue {queue} holds {messages} messages ({size} bytes), above its high watermark "
            f"({marks.high_messages} messages / {marks.high_bytes} bytes); it reopens at "
            f"{marks.low_messages} messages / {marks.low_bytes} bytes ({pace})",
            retry_after=depth.retry_after(settings.retry_after_fallback_seconds),
        )

    def note_admitted(self, queue: str, count: int) -> None:
        depth = self.queues.get(queue)
        if depth is not None:
            depth.note_admitted(self._clock.now_ms(), count)

    async def run(self) -> None:
        """Sample until `stop()`; one failed round never ends the loop."""
        await run_every(
            self._settings.sample_interval_ms / 1000,
            self._stop,
            self.refresh,
            what="admission: depth sampling",
            logger=logger,
        )

    def stop(self) -> None:
        self._stop.set()
