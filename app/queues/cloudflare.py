"""Cloudflare Queues over its v4 REST API: the `QueueBackend` for production.

The publish, pull and ack hot paths use one pooled `httpx.AsyncClient` directly (measured on
loopback, the official SDK's async client costs about 4x more per call); provisioning (queues,
pull consumers) uses the official `cloudflare` SDK, where convenience beats cost.

Client rules (docs/cloudflare-queues.md, "Client rules"): retry 429, 5xx and network errors with
exponential backoff and full jitter, honouring `Retry-After`; never retry 10xxx validation
errors (`app.queues.errors.classify` is the table, which the outbox relay follows too);
decode pulled bodies by `CF-Content-Type` (base64 or plain JSON); accept `warnings` as a
map or a list and a null `result` on publish. A paused queue's pull is recognised by code
10252 (a 429-class code) or by the message `queue_delivery_paused` (with the 409 the pause
documentation names), and is never retried. Publishing is not idempotent: a request that
timed out after Cloudflare stored it is sent again, so consumers dedupe by job id.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from app.core.clock import SystemClock
from app.core.http import parse_retry_after
from app.queues.base import (
    DEFAULT_PULL_BATCH,
    DEFAULT_VISIBILITY_TIMEOUT_MS,
    AckResult,
    ContentType,
    LeasedMessage,
    OutgoingMessage,
    PullResult,
    QueueMetrics,
    QueueStats,
    RetryRequest,
)
from app.queues.errors import (
    ERRORS_BY_CODE,
    QueueError,
    QueueNotFound,
    QueueOverloaded,
    QueuePaused,
    QueueUnavailable,
)
from app.queues.topology import Topology

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 60.0
# How long a read of every queue's paused flag (one list call) serves `stats`: an operator's
# page of a dozen queues must not cost a dozen calls against the account's API limit.
PAUSED_TTL_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 4
    base_delay: float = 0.2
    max_delay: float = 10.0

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_SECONDS)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def _metrics(raw: Any) -> QueueMetrics | None:
    if not isinstance(raw, Mapping):
        return None
    try:
        return QueueMetrics(
            backlog_count=int(raw.get("backlog_count") or 0),
            backlog_bytes=int(raw.get("backlog_bytes") or 0),
            oldest_message_timestamp_ms=int(raw.get("oldest_message_timestamp_ms") or 0),
        )
    except (TypeError, ValueError):
        return None


def decode_pulled_body(body: Any, content_type: str) -> Any:
    """Bodies of `json` messages come base64-encoded (documented) or as plain JSON (observed)."""
    if content_type == "text" or not isinstance(body, str):
        return body
    if content_type == "bytes":
        return base64.b64decode(body)
    try:
        return json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        return json.loads(body)


def _warnings(raw: Any) -> dict[str, str]:
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {str(i): str(v) for i, v in enumerate(raw)}
    return {}


class CloudflareApiError(QueueError):
    """An error answer we have no specific class for."""


class CloudflareQueues:
    """`QueueBackend` over the REST API; queue names resolve to ids on `start()`."""

    def __init__(
        self,
        *,
        account_id: str,
        api_token: str,
        base_url: str,
        timeout_seconds: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.account_id = account_id
        self._api_token = api_token
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = http or httpx.AsyncClient(
            base_url=f"{self.base_url}/accounts/{account_id}/queues",
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        self._queue_ids: dict[str, str] = {}
        # Backlog reported by the last publish or pull, for admission control.
        self.last_metrics: dict[str, QueueMetrics] = {}
        self._paused: dict[str, bool] = {}
        self._paused_read_at = float("-inf")

    # -- provisioning (official SDK) -------------------------------------------------------

    async def start(self, topology: Topology) -> None:
        """Resolve every topology queue to its id, creating queues and pull consumers."""
        from cloudflare import AsyncCloudflare, BadRequestError, ConflictError, omit

        sdk = AsyncCloudflare(api_token=self._api_token, base_url=self.base_url, max_retries=3)

        async def list_queues() -> dict[str, str]:
            found: dict[str, str] = {}
            async for queue in sdk.queues.list(account_id=self.account_id):
                if queue.queue_name and queue.queue_id:
                    found[queue.queue_name] = queue.queue_id
            return found

        try:
            existing = await list_queues()
            for name in topology.queues:
                if name in existing:
                    continue
                try:
                    created = await sdk.queues.create(account_id=self.account_id, queue_name=name)
                except ConflictError:
                    # Another process (gateway or consumer) created it a moment ago.
                    existing = await list_queues()
                    continue
                if created is None or created.queue_id is None:
                    raise QueueUnavailable(f"Cloudflare did not create queue {name!r}")
                existing[name] = created.queue_id
                logger.info("created Cloudflare queue %s (%s)", name, created.queue_id)
            for name, consumer in topology.consumers.items():
                queue_id = existing[name]

                async def has_pull_consumer(queue_id: str = queue_id) -> bool:
                    consumers = sdk.queues.consumers.list(queue_id, account_id=self.account_id)
                    return "http_pull" in [c.type async for c in consumers]

                if await has_pull_consumer():
                    continue
                retry_delay = consumer.retry_delay if isinstance(consumer.retry_delay, int) else 0
                try:
                    await sdk.queues.consumers.create(
                        queue_id,
                        account_id=self.account_id,
                        type="http_pull",
                        dead_letter_queue=consumer.dead_letter_queue or omit,
                        settings={
                            "batch_size": consumer.max_batch_size,
                            "max_retries": consumer.max_retries,
                            "retry_delay": retry_delay,
                            "visibility_timeout_ms": consumer.visibility_timeout_ms,
                        },
                    )
                except (ConflictError, BadRequestError):
                    # Another process may have created it a moment ago: a second http_pull
                    # consumer is refused (409, or 400 code 10105). Else, re-raise.
                    if await has_pull_consumer():
                        continue
                    raise
                logger.info("created http_pull consumer for %s", name)
        finally:
            await sdk.close()
        self._queue_ids = existing

    async def refresh_queue_ids(self) -> dict[str, str]:
        """Re-read every queue's id (queues created outside `start()`, e.g. by an operator)."""
        result = await self._call("GET", "")
        for queue in result or []:
            if queue.get("queue_name") and queue.get("queue_id"):
                self._queue_ids[queue["queue_name"]] = queue["queue_id"]
        return dict(self._queue_ids)

    def queue_id(self, queue: str) -> str:
        try:
            return self._queue_ids[queue]
        except KeyError:
            raise QueueNotFound(f"queue {queue!r} is not provisioned") from None

    # -- transport -------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call with retries; returns the envelope's `result`."""
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                failure: QueueError = QueueUnavailable(
                    f"Cloudflare Queues unreachable: {type(exc).__name__}"
                )
            else:
                if response.status_code < 400:
                    return self._result(response)
                failure = self._error(response)
                # A paused queue stays paused until an operator resumes it: never retried.
                final = response.status_code != 429 and response.status_code < 500
                if final or isinstance(failure, QueuePaused):
                    raise failure
                retry_after = parse_retry_after(
                    response.headers.get("retry-after"), now_ms=SystemClock().now_ms()
                )
            if attempt > self.retry.max_retries:
                raise failure
            delay = self.retry.backoff(attempt, retry_after)
            logger.warning("%s %s failed (%s); retry in %.2fs", method, path, failure.detail, delay)
            await asyncio.sleep(delay)

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            envelope = response.json()
        except ValueError:
            return None
        return envelope.get("result") if isinstance(envelope, Mapping) else None

    @staticmethod
    def _error(response: httpx.Response) -> QueueError:
        code, message = 0, response.reason_phrase
        try:
            errors = response.json().get("errors") or []
            if errors:
                code = int(errors[0].get("code") or 0)
                message = str(errors[0].get("message") or message)
        except (ValueError, AttributeError, TypeError):
            pass
        detail = f"Cloudflare answered {response.status_code} (code {code}): {message}"
        headers: dict[str, str] = {}
        if retry_after := response.headers.get("retry-after"):
            headers["Retry-After"] = retry_after
        cls = ERRORS_BY_CODE.get(code)
        if cls is None and message == "queue_delivery_paused":
            cls = QueuePaused  # the documented message; the code is not documented
        if cls is None:
            if response.status_code == 429:
                cls = QueueOverloaded
            elif response.status_code >= 500:
                cls = QueueUnavailable
            else:
                cls = CloudflareApiError
        return cls(
            detail, headers=headers, backend_status=response.status_code, backend_code=code or None
        )

    # -- QueueBackend ----------------------------------------------------------------------

    @staticmethod
    def _message(message: OutgoingMessage) -> dict[str, Any]:
        item: dict[str, Any] = {"body": message.body, "content_type": message.content_type}
        if message.delay_seconds is not None:
            item["delay_seconds"] = message.delay_seconds
        return item

    async def _after_publish(self, queue: str, result: Any) -> QueueMetrics:
        metrics = _metrics(result.get("metadata", {}).get("metrics")) if result else None
        if metrics is None:
            return await self.metrics(queue)
        self.last_metrics[queue] = metrics
        return metrics

    async def send(self, queue: str, message: OutgoingMessage) -> QueueMetrics:
        result = await self._call(
            "POST", f"/{self.queue_id(queue)}/messages", self._message(message)
        )
        return await self._after_publish(queue, result)

    async def send_batch(
        self,
        queue: str,
        messages: Sequence[OutgoingMessage],
        *,
        delay_seconds: int | None = None,
    ) -> QueueMetrics:
        body: dict[str, Any] = {"messages": [self._message(m) for m in messages]}
        if delay_seconds is not None:
            body["delay_seconds"] = delay_seconds
        result = await self._call("POST", f"/{self.queue_id(queue)}/messages/batch", body)
        return await self._after_publish(queue, result)

    async def pull(
        self,
        queue: str,
        *,
        batch_size: int = DEFAULT_PULL_BATCH,
        visibility_timeout_ms: int = DEFAULT_VISIBILITY_TIMEOUT_MS,
    ) -> PullResult:
        try:
            result = await self._call(
                "POST",
                f"/{self.queue_id(queue)}/messages/pull",
                {"batch_size": batch_size, "visibility_timeout_ms": visibility_timeout_ms},
            )
        except QueuePaused:
            # Paused by an operator: nothing to deliver, as on the local engine. Not an error.
            logger.debug("queue %s is paused: pulled nothing", queue)
            self._paused[queue] = True
            known = self.last_metrics.get(queue) or QueueMetrics(0, 0, 0)
            return PullResult(messages=[], metrics=known)
        result = result or {}
        messages = []
        for raw in result.get("messages") or []:
            metadata = raw.get("metadata") if isinstance(raw.get("metadata"), Mapping) else {}
            content_type = str(metadata.get("CF-Content-Type", "json"))
            declared: ContentType = "text" if content_type == "text" else "json"
            messages.append(
                LeasedMessage(
                    id=str(raw["id"]),
                    body=decode_pulled_body(raw.get("body"), content_type),
                    content_type=declared,
                    attempts=int(raw.get("attempts") or 1),
                    lease_id=str(raw["lease_id"]),
                    timestamp_ms=int(raw.get("timestamp_ms") or 0),
                    metadata={str(k): str(v) for k, v in metadata.items()},
                )
            )
        metrics = _metrics((result.get("metadata") or {}).get("metrics"))
        if metrics is None:
            backlog = int(result.get("message_backlog_count") or 0)
            metrics = QueueMetrics(
                backlog_count=backlog, backlog_bytes=0, oldest_message_timestamp_ms=0
            )
        self.last_metrics[queue] = metrics
        return PullResult(messages=messages, metrics=metrics)

    async def ack(
        self,
        queue: str,
        *,
        acks: Sequence[str] = (),
        retries: Sequence[RetryRequest] = (),
    ) -> AckResult:
        body = {
            "acks": [{"lease_id": lease} for lease in acks],
            "retries": [
                {"lease_id": r.lease_id}
                | ({"delay_seconds": r.delay_seconds} if r.delay_seconds is not None else {})
                for r in retries
            ],
        }
        result = await self._call("POST", f"/{self.queue_id(queue)}/messages/ack", body) or {}
        return AckResult(
            ack_count=int(result.get("ackCount") or 0),
            retry_count=int(result.get("retryCount") or 0),
            warnings=_warnings(result.get("warnings")),
        )

    async def metrics(self, queue: str) -> QueueMetrics:
        result = await self._call("GET", f"/{self.queue_id(queue)}/metrics")
        metrics = _metrics(result) or QueueMetrics(0, 0, 0)
        self.last_metrics[queue] = metrics
        return metrics

    # -- SupportsQueueControl ----------------------------------------------------------------

    async def _resolved_id(self, queue: str) -> str:
        """The queue's id, re-reading the account's queues once when it is not known yet (a
        gateway may serve an operator before its relay provisioned the queues)."""
        if queue not in self._queue_ids:
            await self.refresh_queue_ids()
        return self.queue_id(queue)

    async def _set_paused(self, queue: str, paused: bool) -> None:
        # Wrangler's pause-delivery / resume-delivery: a partial update of the settings.
        body = {"queue_name": queue, "settings": {"delivery_paused": paused}}
        await self._call("PATCH", f"/{await self._resolved_id(queue)}", body)
        self._paused[queue] = paused

    async def pause(self, queue: str, *, session: Any = None) -> None:
        await self._set_paused(queue, True)

    async def resume(self, queue: str, *, session: Any = None) -> None:
        await self._set_paused(queue, False)

    async def purge(self, queue: str, *, session: Any = None) -> None:
        """Cloudflare's purge: every stored message, delayed ones included; it does not say
        how many (None). Messages leased at that moment may still be acked by their holder."""
        queue_id = await self._resolved_id(queue)
        await self._call("POST", f"/{queue_id}/purge", {"delete_messages_permanently": True})
        self.last_metrics[queue] = QueueMetrics(0, 0, 0)

    async def _is_paused(self, queue: str) -> bool:
        loop = asyncio.get_running_loop()
        if queue not in self._paused or loop.time() - self._paused_read_at > PAUSED_TTL_SECONDS:
            for raw in await self._call("GET", "") or []:
                name, settings = raw.get("queue_name"), raw.get("settings") or {}
                if name:
                    self._paused[name] = bool(settings.get("delivery_paused"))
                    if raw.get("queue_id"):
                        self._queue_ids[name] = raw["queue_id"]
            self._paused_read_at = loop.time()
        return self._paused.get(queue, False)

    async def stats(self, queue: str, *, session: Any = None) -> QueueStats:
        """Backlog and oldest message from Cloudflare's metrics; Cloudflare does not report
        in-flight messages (None)."""
        await self._resolved_id(queue)
        metrics = await self.metrics(queue)
        return QueueStats(
            backlog=metrics.backlog_count,
            in_flight=None,
            oldest_message_timestamp_ms=metrics.oldest_message_timestamp_ms,
            paused=await self._is_paused(queue),
        )

    async def close(self) -> None:
        await self._http.aclose()
