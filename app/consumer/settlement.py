"""The plan of what becomes of settled deliveries: acks, retries, copies, job-store writes.

Pure data and decisions, no I/O: the worker fills a `Plan` per delivery (or per group of
deliveries decided together), plans are merged into a settlement group, and the group is
committed at once (copies first, then the job store in one transaction, then one ack call).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from app.consumer.breaker import BreakerKey
from app.consumer.envelope import Delivery, Envelope
from app.consumer.registry import AnyHandlerSpec
from app.jobs.lifecycle import AttemptEnd, AttemptOutcome
from app.queues.base import OutgoingMessage, RetryRequest

log = logging.getLogger("jobgate.consumer")


@dataclass(frozen=True, slots=True)
class QueueRules:
    """What settling a delivery of one queue depends on."""

    queue: str
    max_deliveries: int  # the queue's max_retries + 1
    dead_letter_queue: str | None


@dataclass(slots=True)
class Work:
    """One delivery that is run, and what became of it."""

    delivery: Delivery
    envelope: Envelope
    spec: AnyHandlerSpec | None
    max_attempts: int
    final_delivery: bool  # the queue will not deliver this message again
    attempt: int = 0
    outcome: AttemptOutcome | None = None
    error: str | None = None
    delay: int | None = None
    # True: counts as a failure for the breaker, False: a success, None: neither.
    breaker_failure: bool | None = None
    # Its lease could not be extended: someone else may hold the message now, so nothing
    # is settled for it (the next delivery finds its attempt lost).
    dropped: bool = False

    @property
    def breaker_key(self) -> BreakerKey:
        return (self.envelope.tenant_id, self.envelope.type)


@dataclass(slots=True)
class Judgement:
    """A run's verdict for its (tenant, type) circuit breaker."""

    key: BreakerKey
    failure: bool
    error: str | None = None


@dataclass(slots=True)
class Plan:
    acks: list[str] = field(default_factory=list)
    retries: list[RetryRequest] = field(default_factory=list)
    sends: dict[str, list[OutgoingMessage]] = field(default_factory=dict)
    ends: list[AttemptEnd] = field(default_factory=list)
    dead: dict[str, str] = field(default_factory=dict)  # job id → reason (not run)
    deferred: dict[str, str] = field(default_factory=dict)  # job id → reason
    judgements: list[Judgement] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # deliveries by disposition

    @property
    def leases(self) -> list[str]:
        """Every lease this plan gives up (acked or retried)."""
        return [*self.acks, *(r.lease_id for r in self.retries)]

    @property
    def size(self) -> int:
        return len(self.acks) + len(self.retries)

    def __bool__(self) -> bool:
        return bool(self.size or self.sends or self.ends or self.dead or self.deferred)

    @property
    def writes_job_store(self) -> bool:
        return bool(self.ends or self.dead or self.deferred or self.judgements)

    def merge(self, other: Plan) -> None:
        self.acks.extend(other.acks)
        self.retries.extend(other.retries)
        for queue, messages in other.sends.items():
            self.sends.setdefault(queue, []).extend(messages)
        self.ends.extend(other.ends)
        self.dead.update(other.dead)
        self.deferred.update(other.deferred)
        self.judgements.extend(other.judgements)
        self.counts.update(other.counts)

    def send(self, queue: str, message: OutgoingMessage) -> None:
        self.sends.setdefault(queue, []).append(message)

    # -- decisions -------------------------------------------------------------------------

    def skip(self, delivery: Delivery, disposition: str = "skipped") -> None:
        """Nothing to run (finished job, duplicate copy): acknowledge it."""
        self.acks.append(delivery.lease_id)
        self.counts[disposition] += 1

    def malformed(self, delivery: Delivery, rules: QueueRules) -> None:
        """Not a job envelope: keep a copy in the dead letter queue, drop the message."""
        self.dead_letter_copy(delivery, rules)
        self.acks.append(delivery.lease_id)
        self.counts["malformed"] += 1

    def defer(
        self,
        delivery: Delivery,
        rules: QueueRules,
        *,
        job_id: str,
        delay: int,
        reason: str,
        disposition: str,
    ) -> None:
        """Deliver again after `delay` without running (a delivery it did not use)."""
        self.deferred[job_id] = reason
        self.redeliver(delivery, rules, delay=delay, fresh=True)
        self.counts[disposition] += 1

    def exhausted(self, work: Work, rules: QueueRules, reason: str) -> None:
        """No attempt left: the job is dead without running again."""
        self.dead[work.envelope.job_id] = reason
        self.dead_letter(work, rules)
        self.counts["dead"] += 1

    def outcome(self, work: Work, rules: QueueRules) -> None:
        """How a run ended: its attempt's end, its breaker verdict and its message's fate."""
        outcome = work.outcome
        if outcome is None:
            raise ValueError(f"job {work.envelope.job_id}: settled before it ended")
        self.counts[outcome.value] += 1
        self.ends.append(
            AttemptEnd(
                job_id=work.envelope.job_id,
                attempt=work.attempt,
                outcome=outcome,
                error=work.error,
                retry_delay_seconds=work.delay,
            )
        )
        if work.breaker_failure is not None:
            self.judgements.append(Judgement(work.breaker_key, work.breaker_failure, work.error))
        if outcome in (AttemptOutcome.succeeded, AttemptOutcome.failed):
            self.acks.append(work.delivery.lease_id)
        elif outcome is AttemptOutcome.retry:
            self.redeliver(work.delivery, rules, delay=work.delay or 0)
        elif outcome is AttemptOutcome.released:
            self.redeliver(work.delivery, rules, delay=0)
        else:
            self.dead_letter(work, rules)

    def redeliver(
        self, delivery: Delivery, rules: QueueRules, *, delay: int, fresh: bool = False
    ) -> None:
        """Deliver again after `delay`: a retry, or a re-sent copy when a retry would count
        a delivery the job did not use (`fresh`) or exhaust the message's deliveries."""
        message = delivery.message
        if fresh or message.attempts >= rules.max_deliveries:
            self.send(
                rules.queue,
                OutgoingMessage(
                    body=message.body, content_type=message.content_type, delay_seconds=delay
                ),
            )
            self.acks.append(message.lease_id)
        else:
            self.retries.append(RetryRequest(lease_id=message.lease_id, delay_seconds=delay))

    def dead_letter(self, work: Work, rules: QueueRules) -> None:
        message = work.delivery.message
        if work.final_delivery and rules.dead_letter_queue:
            # The backend moves an exhausted message to the DLQ itself on retry.
            self.retries.append(RetryRequest(lease_id=message.lease_id, delay_seconds=0))
            return
        self.dead_letter_copy(work.delivery, rules)
        self.acks.append(message.lease_id)

    def dead_letter_copy(self, delivery: Delivery, rules: QueueRules) -> None:
        """A copy in the dead letter queue; without one the message is dropped."""
        if rules.dead_letter_queue is None:
            log.error("queue %s has no dead letter queue: message dropped", rules.queue)
            return
        message = delivery.message
        self.send(
            rules.dead_letter_queue,
            OutgoingMessage(body=message.body, content_type=message.content_type),
        )
