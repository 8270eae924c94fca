"""What the consumer tells the outside about each attempt: metrics, one log line, a span.

The worker wraps a handler run in `attempt(...)` and reports the outcome it decided with
`run.ended(...)`; a job ended without a run (no attempt left) is reported by `ended_unrun`.
A job that ends `failed` or `dead` logs exactly once, at WARNING, with its reason; a retry
logs at INFO; a success logs nothing (the metrics count it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.trace import Span, SpanKind

from app.observability import logs, metrics, tracing

log = logging.getLogger("jobgate.jobs")


class JobMessage(Protocol):
    """What a job's envelope says about it (the consumer's `Envelope`)."""

    @property
    def job_id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def trace(self) -> Mapping[str, Any] | None: ...


@dataclass(slots=True)
class AttemptRun:
    queue: str
    job: JobMessage
    attempt: int
    started: float
    span: Span | None = None
    reported: bool = False

    def ended(self, outcome: str | None, error: str | None, *, delay: int | None = None) -> None:
        """The run's outcome (succeeded, retry, failed, dead, released), as decided."""
        if outcome is None or self.reported:
            return
        self.reported = True
        duration = time.perf_counter() - self.started
        metrics.attempt_ended(self.job.type, outcome, duration)
        if self.span is not None:
            self.span.set_attribute("jobgate.outcome", outcome)
            if outcome != "succeeded":
                tracing.mark_error(self.span, error or outcome)
        _log_outcome(self.queue, self.job, self.attempt, outcome, error, delay)


@contextmanager
def attempt(queue: str, job: JobMessage, number: int) -> Iterator[AttemptRun]:
    """One handler run: counted as started, logged with the job's context, traced as a
    CONSUMER span under the request that created the job."""
    metrics.attempt_started(job.type)
    context = logs.job_context(
        job_id=job.job_id, tenant_id=job.tenant_id, queue=queue, type=job.type, attempt=number
    )
    if not tracing.enabled():  # the common case: no span, nor its attributes, to build
        with context:
            yield AttemptRun(queue, job, number, time.perf_counter())
        return
    with (
        context,
        tracing.span(
            f"attempt {job.type}",
            parent=job.trace or {},
            kind=SpanKind.CONSUMER,
            attributes={
                "jobgate.job_id": job.job_id,
                "jobgate.tenant_id": job.tenant_id,
                "jobgate.attempt": number,
                "messaging.destination.name": queue,
            },
        ) as current,
    ):
        yield AttemptRun(queue, job, number, time.perf_counter(), current)


@contextmanager
def attempts(queue: str, jobs: Sequence[tuple[JobMessage, int]]) -> Iterator[list[AttemptRun]]:
    """A batch handler's call: one attempt per job (of one type) for metrics and outcomes.
    Its records carry the batch's queue and type (one call runs every job at once); while
    tracing, each job still gets its own span, as a single run would."""
    if tracing.enabled():
        with ExitStack() as stack:
            yield [stack.enter_context(attempt(queue, job, number)) for job, number in jobs]
        return
    if not jobs:
        yield []
        return
    job_type = jobs[0][0].type
    metrics.attempt_started(job_type, len(jobs))
    with logs.job_context(queue=queue, type=job_type):
        started = time.perf_counter()
        yield [AttemptRun(queue, job, number, started) for job, number in jobs]


def ended_unrun(queue: str, job: JobMessage, attempts: int, outcome: str, reason: str) -> None:
    """A job ended without running again (e.g. `dead`: no attempt left)."""
    metrics.attempt_ended(job.type, outcome, None)
    _log_outcome(queue, job, attempts, outcome, reason, None)


def _log_outcome(
    queue: str, job: JobMessage, attempt: int, outcome: str, error: str | None, delay: int | None
) -> None:
    extra = {
        "job_id": job.job_id,
        "tenant_id": job.tenant_id,
        "queue": queue,
        "type": job.type,
        "attempt": attempt,
        "outcome": outcome,
        "reason": error,
    }
    if outcome == "dead":
        log.warning(
            "job %s is dead after attempt %d (message in the dead letter queue): %s",
            job.job_id,
            attempt,
            error,
            extra=extra,
        )
    elif outcome == "failed":
        log.warning("job %s failed permanently: %s", job.job_id, error, extra=extra)
    elif outcome == "retry":
        when = f"in {delay}s" if delay is not None else "later"
        log.info(
            "job %s attempt %d failed, retrying %s: %s",
            job.job_id,
            attempt,
            when,
            error,
            extra=extra,
        )
