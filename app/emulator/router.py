"""The Cloudflare v4 REST API for Queues (docs/cloudflare-queues.md), as the official SDK
calls it."""

from __future__ import annotations

import base64
import hmac
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from app.emulator.config import EmulatorAppSettings, JsonBodyMode
from app.emulator.errors import AuthError, BodyInvalid, envelope
from app.emulator.models import EmulatorConsumer
from app.emulator.schemas import (
    ConsumerOut,
    Metrics,
    PeekedMessage,
    PulledMessage,
    QueueOut,
    QueueSettingsOut,
    parse_ack,
    parse_batch,
    parse_consumer,
    parse_json,
    parse_message,
    parse_peek,
    parse_pull,
    parse_queue,
    parse_refs,
    timestamp,
)
from app.emulator.service import EmulatorService, QueueRecord
from app.queues.local import encode_body, make_lease_id

# Pull and ack are exempt from the global API limit, as Cloudflare documents.
_UNMETERED = ("/messages/pull", "/messages/ack")


def get_service(request: Request) -> EmulatorService:
    service: EmulatorService = request.app.state.emulator
    return service


ServiceDep = Annotated[EmulatorService, Depends(get_service)]


async def authorize(request: Request, account_id: str, response: Response) -> None:
    """Exactly the configured token for exactly the configured account (else code 10000)."""
    settings: EmulatorAppSettings = request.app.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authentication error", status=401)
    token = token.strip()
    if not hmac.compare_digest(token.encode(), settings.cloudflare.api_token.encode()):
        raise AuthError("Authentication error")
    if account_id != settings.cloudflare.account_id:
        raise AuthError("Authentication error")
    if not request.url.path.endswith(_UNMETERED):
        response.headers.update(get_service(request).limiter.take_request(token))


router = APIRouter(
    prefix="/client/v4/accounts/{account_id}/queues", dependencies=[Depends(authorize)]
)


async def _body(request: Request) -> Any:
    return parse_json(await request.body())


def _consumer_out(consumer: EmulatorConsumer, queue_name: str) -> dict[str, Any]:
    out = ConsumerOut(
        consumer_id=consumer.id,
        created_on=timestamp(consumer.created_at),
        queue_name=queue_name,
        type="worker" if consumer.type == "worker" else "http_pull",
        dead_letter_queue=consumer.dead_letter_queue or "",
        # Cloudflare's schema types every setting as a number: a null one is left out.
        settings={k: int(v) for k, v in consumer.settings.items() if v is not None},
        script_name=consumer.script_name,
    )
    shown = out.model_dump()
    if shown["script_name"] is None:  # only worker consumers have one
        del shown["script_name"]
    return shown


def queue_out(record: QueueRecord) -> dict[str, Any]:
    queue = record.queue
    consumers = record.consumers
    out = QueueOut(
        queue_id=queue.id,
        queue_name=queue.name,
        created_on=timestamp(queue.created_at),
        modified_on=timestamp(queue.modified_at),
        producers=[],
        producers_total_count=0,
        consumers=[],
        consumers_total_count=len(consumers),
        settings=QueueSettingsOut(
            delivery_delay=queue.delivery_delay,
            delivery_paused=record.paused,
            message_retention_period=queue.message_retention_period,
        ),
        jurisdiction=queue.jurisdiction,
    ).model_dump()
    if out["jurisdiction"] is None:
        del out["jurisdiction"]
    out["consumers"] = [_consumer_out(c, queue.name) for c in consumers]
    return out


def _pulled_body(raw_text: str, content_type: str, mode: JsonBodyMode) -> str:
    """`json` bodies as base64 of the JSON text (documented) or the JSON text itself."""
    if content_type == "json" and mode == "base64":
        return base64.b64encode(raw_text.encode()).decode()
    return raw_text


# -- queues -------------------------------------------------------------------------------


@router.post("")
async def create_queue(request: Request, service: ServiceDep) -> dict[str, Any]:
    """Create a queue."""
    given = parse_queue(await _body(request), name_required=True)
    return envelope(queue_out(await service.create_queue(given)))


@router.get("")
async def list_queues(
    service: ServiceDep,
    name: Annotated[list[str] | None, Query()] = None,
    page: int = 1,
    per_page: int = 100,
) -> dict[str, Any]:
    """List queues, optionally only those with the given names."""
    if page < 1 or not 1 <= per_page <= 1000:
        raise BodyInvalid("page must be >= 1 and per_page 1..1000")
    records = service.list_queues(name or ())
    chunk = records[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(records),
        "total_pages": max(1, math.ceil(len(records) / per_page)),
    }
    return envelope([queue_out(r) for r in chunk], result_info=info)


@router.get("/{queue_id}")
async def get_queue(queue_id: str, service: ServiceDep) -> dict[str, Any]:
    """Get a queue."""
    return envelope(queue_out(service.get(queue_id)))


@router.put("/{queue_id}")
async def update_queue(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Replace a queue's name and settings."""
    service.get(queue_id)
    given = parse_queue(await _body(request), name_required=False)
    return envelope(queue_out(await service.update_queue(queue_id, given, partial=False)))


@router.patch("/{queue_id}")
async def edit_queue(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Change some of a queue's settings (pause and resume delivery)."""
    service.get(queue_id)
    given = parse_queue(await _body(request), name_required=False)
    return envelope(queue_out(await service.update_queue(queue_id, given, partial=True)))


@router.delete("/{queue_id}")
async def delete_queue(queue_id: str, service: ServiceDep) -> dict[str, Any]:
    """Delete a queue, its consumers and its messages."""
    await service.delete_queue(queue_id)
    return envelope(None)


@router.get("/{queue_id}/metrics")
async def get_metrics(queue_id: str, service: ServiceDep) -> dict[str, Any]:
    """Realtime backlog metrics."""
    metrics = await service.metrics(service.get(queue_id))
    return envelope(Metrics.of(metrics).model_dump())


@router.post("/{queue_id}/purge")
async def purge_queue(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Delete every message of the queue."""
    record = service.get(queue_id)
    body = await _body(request)
    if not isinstance(body, dict) or body.get("delete_messages_permanently") is not True:
        raise BodyInvalid('purging needs {"delete_messages_permanently": true}')
    return envelope(queue_out(await service.purge(record)))


@router.get("/{queue_id}/purge")
async def purge_status(queue_id: str, service: ServiceDep) -> dict[str, Any]:
    """When the last purge started (absent if never); purges complete at once here."""
    started = service.get(queue_id).queue.purge_started_at
    status: dict[str, Any] = {"completed": "true", "complete": True}  # wrangler: `complete`
    if started is not None:
        status["started_at"] = timestamp(started)
    return envelope(status)


# -- consumers ----------------------------------------------------------------------------


@router.post("/{queue_id}/consumers")
async def create_consumer(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Attach a consumer (one of each type per queue here: docs/emulator.md)."""
    record = service.get(queue_id)
    consumer = await service.set_consumer(record.id, parse_consumer(await _body(request)))
    return envelope(_consumer_out(consumer, record.queue.name))


@router.get("/{queue_id}/consumers")
async def list_consumers(queue_id: str, service: ServiceDep) -> dict[str, Any]:
    """The queue's consumers."""
    record = service.get(queue_id)
    return envelope([_consumer_out(c, record.queue.name) for c in record.consumers])


@router.get("/{queue_id}/consumers/{consumer_id}")
async def get_consumer(queue_id: str, consumer_id: str, service: ServiceDep) -> dict[str, Any]:
    """Get a consumer."""
    record, consumer = service.get_consumer(queue_id, consumer_id)
    return envelope(_consumer_out(consumer, record.queue.name))


@router.put("/{queue_id}/consumers/{consumer_id}")
async def update_consumer(
    queue_id: str, consumer_id: str, request: Request, service: ServiceDep
) -> dict[str, Any]:
    """Update the consumer, or create it under this id if it does not exist (Cloudflare:
    "Updates the consumer for a queue, or creates one if it does not exist")."""
    record = service.get(queue_id)
    given = parse_consumer(await _body(request))
    consumer = await service.set_consumer(record.id, given, consumer_id=consumer_id)
    return envelope(_consumer_out(consumer, record.queue.name))


@router.delete("/{queue_id}/consumers/{consumer_id}")
async def delete_consumer(queue_id: str, consumer_id: str, service: ServiceDep) -> dict[str, Any]:
    """Detach a consumer."""
    await service.delete_consumer(queue_id, consumer_id)
    return envelope(None)


# -- messages -----------------------------------------------------------------------------


@router.post("/{queue_id}/messages")
async def push_message(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Publish one message."""
    record = service.get(queue_id)
    message = parse_message(await _body(request))
    metrics = await service.push(record, [message])
    return envelope({"metadata": {"metrics": Metrics.of(metrics).model_dump()}})


@router.post("/{queue_id}/messages/batch")
async def push_batch(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Publish up to 100 messages (256 KB) at once."""
    record = service.get(queue_id)
    batch = parse_batch(await _body(request))
    metrics = await service.push(record, batch.messages, delay_seconds=batch.delay_seconds)
    return envelope({"metadata": {"metrics": Metrics.of(metrics).model_dump()}})


@router.post("/{queue_id}/messages/pull")
async def pull_messages(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Lease a batch of messages (short polling: returns at once, maybe empty)."""
    record = service.get(queue_id)
    given = parse_pull(await _body(request))
    result = await service.pull(
        record, batch_size=given.batch_size, visibility_timeout_ms=given.visibility_timeout_ms
    )
    mode = service.config.json_body
    messages = [
        PulledMessage(
            id=m.id,
            body=_pulled_body(encode_body(m.body, m.content_type), m.content_type, mode),
            attempts=m.attempts,
            lease_id=m.lease_id,
            timestamp_ms=m.timestamp_ms,
            metadata=m.metadata,
        ).model_dump()
        for m in result.messages
    ]
    metrics = Metrics.of(result.metrics).model_dump()
    return envelope(
        {
            "message_backlog_count": result.metrics.backlog_count,
            "messages": messages,
            "metadata": {"metrics": metrics},
        }
    )


@router.post("/{queue_id}/messages/ack")
async def ack_messages(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Acknowledge and retry leased messages (unknown leases only warn)."""
    record = service.get(queue_id)
    given = parse_ack(await _body(request))
    result = await service.ack(record, acks=given.acks, retries=given.retries)
    counts = {"ackCount": result.ack_count, "retryCount": result.retry_count}
    return envelope({**counts, "warnings": result.warnings})


@router.post("/{queue_id}/messages/peek")
async def peek_messages(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Look at deliverable messages without leasing them; each comes with a purge ref."""
    record = service.get(queue_id)
    rows = await service.peek(record, batch_size=parse_peek(await _body(request)))
    mode = service.config.json_body
    messages = []
    for row in rows:
        metadata = {"CF-sourceMessageSource": "api", "CF-Content-Type": row.content_type}
        if row.delay_seconds:
            metadata["CF-msg-delay-secs"] = str(row.delay_seconds)
        messages.append(
            PeekedMessage(
                id=row.id,
                body=_pulled_body(row.body, row.content_type, mode),
                attempts=row.attempts,
                ref=make_lease_id(row.id),  # opaque, names its message like a lease id
                timestamp_ms=row.enqueued_ms,
                metadata=metadata,
            ).model_dump()
        )
    return envelope({"messages": messages})


@router.post("/{queue_id}/messages/purge")
async def purge_messages(queue_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Delete peeked messages by ref."""
    record = service.get(queue_id)
    warnings = await service.purge_refs(record, parse_refs(await _body(request)))
    return envelope({"errors": [], "warnings": warnings})
