"""The queue backend protocol, with Cloudflare Queues' semantics.

Every backend (the local SQL engine, Cloudflare over REST) passes one conformance suite
(`tests/contract/test_queue_backends.py`):

- delivery is at-least-once, ordering best effort;
- a message becomes visible after its delay (message, else batch, else queue default; an
  explicit 0 means now);
- `pull` leases up to `batch_size` visible messages for `visibility_timeout_ms`, counting one
  attempt per delivery; concurrent pullers never get the same message inside one lease;
- an unacked lease expires and the message is delivered again;
- `ack` deletes (permissively: an old lease of a still-stored message still deletes it);
  `retry` needs the current lease and makes the message visible again after its delay (else
  the consumer's `retry_delay`); unknown or stale leases only add warnings, and the counts
  are of effective operations;
- after `max_retries + 1` deliveries a failed message moves to the dead letter queue, or is
  dropped when the queue has none;
- messages older than the retention period are deleted; metrics count every stored message,
  delayed and in flight included (`oldest_message_timestamp_ms` is 0 when empty);
- invalid input raises the `QueueError` subclass carrying Cloudflare's error code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

ContentType = Literal["json", "text"]

MAX_MESSAGE_BYTES = 128_000
# Cloudflare counts about 100 bytes of its own metadata against each message.
MESSAGE_OVERHEAD_BYTES = 100
MAX_BATCH_MESSAGES = 100
MAX_BATCH_BYTES = 256_000
MAX_PULL_BATCH = 100
DEFAULT_PULL_BATCH = 5
DEFAULT_VISIBILITY_TIMEOUT_MS = 30_000


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    body: Any
    content_type: ContentType = "json"
    delay_seconds: int | None = None
    # `body` as compact JSON, when the sender has encoded it already (a job's envelope is,
    # for its size check): stored as is instead of encoded again.
    encoded: str | None = None


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    backlog_count: int
    backlog_bytes: int
    oldest_message_timestamp_ms: int  # 0 when the queue is empty


@dataclass(frozen=True, slots=True)
class LeasedMessage:
    id: str
    body: Any
    content_type: ContentType
    attempts: int
    lease_id: str
    timestamp_ms: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PullResult:
    messages: list[LeasedMessage]
    metrics: QueueMetrics


@dataclass(frozen=True, slots=True)
class RetryRequest:
    lease_id: str
    delay_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class AckResult:
    ack_count: int
    retry_count: int
    warnings: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class QueueBackend(Protocol):
    async def send(self, queue: str, message: OutgoingMessage) -> QueueMetrics: ...

    async def send_batch(
        self,
        queue: str,
        messages: Sequence[OutgoingMessage],
        *,
        delay_seconds: int | None = None,
    ) -> QueueMetrics: ...

    async def pull(
        self,
        queue: str,
        *,
        batch_size: int = DEFAULT_PULL_BATCH,
        visibility_timeout_ms: int = DEFAULT_VISIBILITY_TIMEOUT_MS,
    ) -> PullResult: ...

    async def ack(
        self,
        queue: str,
        *,
        acks: Sequence[str] = (),
        retries: Sequence[RetryRequest] = (),
    ) -> AckResult: ...

    async def metrics(self, queue: str) -> QueueMetrics: ...

    async def close(self) -> None: ...


@runtime_checkable
class SupportsLeaseExtension(Protocol):
    """Optional capability: push held leases forward (the consumer's heartbeat uses it).

    Returns the lease ids extended; any other was lost (acked, expired and delivered again,
    dead-lettered) and its holder must stop working on it. `session`: a transaction on the
    backend's own database to join (the caller commits), when it has one.
    """

    async def extend_leases(
        self,
        queue: str,
        lease_ids: Sequence[str],
        visibility_timeout_ms: int,
        *,
        session: Any = None,
    ) -> set[str]: ...


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue as an operator sees it."""

    backlog: int  # every stored message: visible, delayed and in flight
    in_flight: int | None  # leased and not acked; None when the backend cannot tell
    oldest_message_timestamp_ms: int  # 0 when the queue is empty
    paused: bool


@runtime_checkable
class SupportsQueueControl(Protocol):
    """Optional capability: the operator's controls, with Cloudflare's semantics.

    - a paused queue still accepts messages (and still applies retention); pulls get none;
    - `purge` deletes every stored message, delayed and leased ones included, and returns how
      many when the backend can tell (None otherwise);
    - `stats` reads the backlog, in-flight count, oldest message and paused flag.

    `session`: a transaction on the backend's own database to join (the caller commits), when
    it has one; on SQLite a second transaction beside the caller's would wait for its lock.
    """

    async def pause(self, queue: str, *, session: Any = None) -> None: ...

    async def resume(self, queue: str, *, session: Any = None) -> None: ...

    async def purge(self, queue: str, *, session: Any = None) -> int | None: ...

    async def stats(self, queue: str, *, session: Any = None) -> QueueStats: ...
@runtime_checkable
class SupportsJointTransactions(Protocol):
    """Optional capability of a backend stored in the job store's database (the local engine):
    lease, acknowledge and send inside the caller's transaction (the caller commits).

    A consumer then starts a batch's attempts in the transaction that leases it, and settles
    the outcomes in the transaction that acknowledges them: two transactions per batch, and
    the job store and the queue never disagree after a crash. `lease` reports no metrics,
    so its cost does not grow with the backlog.
    """

    async def lease(
        self, session: Any, queue: str, *, batch_size: int, visibility_timeout_ms: int
    ) -> list[LeasedMessage]: ...

    async def ack_in(
        self,
        session: Any,
        queue: str,
        *,
        acks: Sequence[str] = (),
        retries: Sequence[RetryRequest] = (),
    ) -> AckResult: ...

    async def stage(
        self,
        session: Any,
        queue: str,
        messages: Sequence[OutgoingMessage],
        *,
        delay_seconds: int | None = None,
    ) -> None: ...
