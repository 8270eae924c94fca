"""The settlement plan, without a queue, a database or an event loop."""

from __future__ import annotations

from app.consumer.envelope import Delivery, Envelope
from app.consumer.settlement import Judgement, Plan, QueueRules, Work
from app.jobs.lifecycle import AttemptEnd, AttemptOutcome
from app.queues.base import LeasedMessage, OutgoingMessage, RetryRequest

RULES = QueueRules(queue="q", max_deliveries=3, dead_letter_queue="q-dlq")
BODY = {"job_id": "j1", "tenant_id": "t1", "type": "x", "payload": {}}


def delivery(attempts: int = 1, lease: str = "L1") -> Delivery:
    message = LeasedMessage(
        id="m1", body=BODY, content_type="json", attempts=attempts, lease_id=lease, timestamp_ms=0
    )
    return Delivery(message, Envelope.parse(BODY), lease_expires_ms=30_000, received_ms=0)


def work(outcome: AttemptOutcome, *, attempts: int = 1, **fields: object) -> Work:
    d = delivery(attempts)
    assert d.envelope is not None
    done = Work(
        delivery=d,
        envelope=d.envelope,
        spec=None,
        max_attempts=3,
        final_delivery=attempts >= RULES.max_deliveries,
        attempt=attempts,
        outcome=outcome,
    )
    for name, value in fields.items():
        setattr(done, name, value)
    return done


def settled(w: Work) -> Plan:
    plan = Plan()
    plan.outcome(w, RULES)
    return plan


def test_success_acks_and_closes_the_attempt() -> None:
    plan = settled(work(AttemptOutcome.succeeded, breaker_failure=False))
    assert plan.acks == ["L1"]
    assert plan.retries == []
    assert plan.sends == {}
    assert plan.ends == [AttemptEnd("j1", 1, AttemptOutcome.succeeded)]
    assert plan.judgements == [Judgement(("t1", "x"), False, None)]
    assert plan.counts == {"succeeded": 1}


def test_retry_uses_the_lease_with_its_delay() -> None:
    plan = settled(work(AttemptOutcome.retry, delay=20, error="503", breaker_failure=True))
    assert plan.retries == [RetryRequest("L1", 20)]
    assert plan.acks == []
    assert plan.ends[0].retry_delay_seconds == 20
    assert plan.judgements == [Judgement(("t1", "x"), True, "503")]


def test_retry_on_the_messages_last_delivery_is_a_fresh_copy() -> None:
    # A retry would exhaust the message (and dead-letter it) though the job has attempts left.
    plan = settled(work(AttemptOutcome.retry, attempts=3, delay=5))
    assert plan.retries == []
    assert plan.sends == {"q": [OutgoingMessage(body=BODY, delay_seconds=5)]}
    assert plan.acks == ["L1"]


def test_dead_on_the_final_delivery_lets_the_queue_dead_letter_it() -> None:
    plan = settled(work(AttemptOutcome.dead, attempts=3))
    assert plan.retries == [RetryRequest("L1", 0)]
    assert plan.sends == {}


def test_dead_before_the_final_delivery_copies_to_the_dlq() -> None:
    plan = settled(work(AttemptOutcome.dead, attempts=1))
    assert plan.sends == {"q-dlq": [OutgoingMessage(body=BODY)]}
    assert plan.acks == ["L1"]


def test_released_comes_back_at_once() -> None:
    plan = settled(work(AttemptOutcome.released))
    assert plan.retries == [RetryRequest("L1", 0)]


def test_deferral_is_a_fresh_copy_and_an_event() -> None:
    plan = Plan()
    plan.defer(delivery(), RULES, job_id="j1", delay=30, reason="busy", disposition="redelayed")
    assert plan.sends == {"q": [OutgoingMessage(body=BODY, delay_seconds=30)]}
    assert plan.acks == ["L1"]
    assert plan.deferred == {"j1": "busy"}
    assert plan.counts == {"redelayed": 1}


def test_malformed_without_a_dlq_is_dropped() -> None:
    plan = Plan()
    plan.malformed(delivery(), QueueRules(queue="q", max_deliveries=3, dead_letter_queue=None))
    assert plan.sends == {}
    assert plan.acks == ["L1"]


def test_plans_merge_into_one_group() -> None:
    group = Plan()
    group.merge(settled(work(AttemptOutcome.succeeded)))
    other = Plan()
    other.skip(delivery(lease="L2"))
    group.merge(other)
    assert group.acks == ["L1", "L2"]
    assert group.leases == ["L1", "L2"]
    assert group.size == 2
    assert group.counts == {"succeeded": 1, "skipped": 1}
    assert not Plan()
