"""Request parsing and response shapes of the Cloudflare Queues API (docs/cloudflare-queues.md).

Bodies are parsed by hand rather than by FastAPI, because Cloudflare answers each kind of
mistake with its own code: not JSON → 10208, wrong shape, type or range (queue and consumer
settings included) → 10207, bad content type or message delay → 10203, bad batch delay →
10202. Integral floats (`10.0`) count as integers: the official SDK types every number as
`float`. Durations in seconds (delays, retention) may be fractional, as Cloudflare's schema
types them as numbers: they are truncated to whole seconds, as the Workers runtime does
with `delaySeconds`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.emulator.errors import (
    BatchCountInvalid,
    BatchDelayInvalid,
    BodyInvalid,
    BodyMalformed,
    CfError,
    MessageMetadataInvalid,
)
from app.queues.base import (
    DEFAULT_PULL_BATCH,
    DEFAULT_VISIBILITY_TIMEOUT_MS,
    MAX_BATCH_MESSAGES,
    MAX_PULL_BATCH,
    OutgoingMessage,
    QueueMetrics,
    RetryRequest,
)
from app.queues.topology import MAX_DELAY_SECONDS, MAX_VISIBILITY_TIMEOUT_MS

MIN_RETENTION_SECONDS = 60
MAX_RETENTION_SECONDS = 1_209_600
# Lowercase letters, digits and dashes, 1-63 characters (Cloudflare's queue name rule).
QUEUE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HEX_ID = re.compile(r"^[0-9a-f]{32}$")

ConsumerType = Literal["http_pull", "worker"]
JURISDICTIONS = ("eu", "us", "fedramp")
# Settings measured in seconds: fractional values are truncated, not refused.
SECONDS_SETTINGS = frozenset({"retry_delay"})

# Consumer settings each type shows, with Cloudflare's defaults.
CONSUMER_DEFAULTS: dict[str, dict[str, int | None]] = {
    "http_pull": {
        "batch_size": DEFAULT_PULL_BATCH,
        "max_retries": 3,
        "retry_delay": 0,
        "visibility_timeout_ms": DEFAULT_VISIBILITY_TIMEOUT_MS,
    },
    "worker": {
        "batch_size": 10,
        "max_concurrency": None,
        "max_retries": 3,
        "max_wait_time_ms": 5000,
        "retry_delay": 0,
    },
}
# (minimum, maximum) of every consumer setting; max_concurrency may also be null.
CONSUMER_LIMITS: dict[str, tuple[int, int]] = {
    "batch_size": (1, 100),
    "max_retries": (0, 100),
    "max_wait_time_ms": (0, 60_000),
    "retry_delay": (0, MAX_DELAY_SECONDS),
    "visibility_timeout_ms": (1, MAX_VISIBILITY_TIMEOUT_MS),
    "max_concurrency": (1, 250),
}


# -- primitives ---------------------------------------------------------------------------


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; an empty body reads as `{}`."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BodyMalformed("request body is not valid JSON") from None


def _optional(raw: dict[str, Any], key: str, default: Any) -> Any:
    """`raw[key]`, or `default` when absent. A null is a value (of the wrong type): the
    schema makes none of these fields nullable."""
    return raw[key] if key in raw else default


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BodyInvalid(f"{what} must be a JSON object")
    return value


def as_int(value: Any) -> int | None:
    """`value` as an int if it is an integer (or an integral float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _bounded(
    raw: dict[str, Any],
    key: str,
    lo: int,
    hi: int,
    error: type[CfError],
    default: int | None,
    *,
    nullable: bool = False,
) -> int | None:
    if key not in raw or (nullable and raw[key] is None):
        return default
    value = as_int(raw[key])
    if value is None or not lo <= value <= hi:
        raise error(f"{key} must be an integer {lo}..{hi}")
    return value


def _seconds(raw: dict[str, Any], key: str, lo: int, hi: int, error: type[CfError]) -> int | None:
    """A duration in seconds: any number in range, truncated to whole seconds."""
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise error(f"{key} must be a number of seconds {lo}..{hi}")
    return int(value)


def _delay(raw: dict[str, Any], error: type[CfError]) -> int | None:
    return _seconds(raw, "delay_seconds", 0, MAX_DELAY_SECONDS, error)


def check_queue_name(name: Any) -> str:
    if not isinstance(name, str):
        raise BodyInvalid("queue_name must be a string")
    if not QUEUE_NAME.match(name):
        raise BodyInvalid(
            "queue names are 1-63 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )
    return name


# -- queues -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueInput:
    """`POST /queues`, `PUT` and `PATCH /queues/{id}`; `None` means "not given"."""

    queue_name: str | None
    delivery_delay: int | None = None
    message_retention_period: int | None = None
    delivery_paused: bool | None = None
    jurisdiction: str | None = None  # one of JURISDICTIONS


def parse_queue(body: Any, *, name_required: bool) -> QueueInput:
    raw = _object(body, "the request body")
    if "queue_name" not in raw and name_required:
        raise BodyInvalid("queue_name is required")
    name = check_queue_name(raw["queue_name"]) if "queue_name" in raw else None
    settings = _object(_optional(raw, "settings", {}), "settings")
    paused = _optional(settings, "delivery_paused", None)
    if "delivery_paused" in settings and not isinstance(paused, bool):
        raise BodyInvalid("delivery_paused must be a boolean")
    jurisdiction = _optional(raw, "jurisdiction", None)
    if "jurisdiction" in raw and jurisdiction not in JURISDICTIONS:
        raise BodyInvalid(f"jurisdiction must be one of {', '.join(JURISDICTIONS)}")
    return QueueInput(
        queue_name=name,
        delivery_delay=_seconds(settings, "delivery_delay", 0, MAX_DELAY_SECONDS, BodyInvalid),
        message_retention_period=_seconds(
            settings,
            "message_retention_period",
            MIN_RETENTION_SECONDS,
            MAX_RETENTION_SECONDS,
            BodyInvalid,
        ),
        delivery_paused=paused,
        jurisdiction=jurisdiction,
    )


# -- consumers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerInput:
    type: ConsumerType
    script_name: str | None
    dead_letter_queue: str | None
    settings: dict[str, int | None]


def parse_consumer(body: Any) -> ConsumerInput:
    raw = _object(body, "the request body")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in CONSUMER_DEFAULTS:
        raise BodyInvalid("type must be 'http_pull' or 'worker'")
    script = raw.get("script_name", raw.get("script"))  # older API versions said `script`
    if kind == "worker" and (not isinstance(script, str) or not script):
        raise BodyInvalid("script_name is required for a worker consumer")
    dlq = _optional(raw, "dead_letter_queue", "")
    dlq = check_queue_name(dlq) if dlq != "" else None  # "" means none, as in responses
    given = _object(_optional(raw, "settings", {}), "settings")
    settings: dict[str, int | None] = {}
    for key, (lo, hi) in CONSUMER_LIMITS.items():
        if key in SECONDS_SETTINGS:
            settings[key] = _seconds(given, key, lo, hi, BodyInvalid)
        else:  # max_concurrency: null leaves it to the platform, as documented
            nullable = key == "max_concurrency"
            settings[key] = _bounded(given, key, lo, hi, BodyInvalid, None, nullable=nullable)
    shown = {
        key: default if settings.get(key) is None else settings[key]
        for key, default in CONSUMER_DEFAULTS[kind].items()
    }
    return ConsumerInput(
        type="worker" if kind == "worker" else "http_pull",
        script_name=script if kind == "worker" else None,
        dead_letter_queue=dlq,
        settings=shown,
    )


# -- messages -----------------------------------------------------------------------------


def parse_message(raw: Any) -> OutgoingMessage:
    message = _object(raw, "a message")
    if "body" not in message:
        raise BodyInvalid("a message needs a body")
    content_type = message.get("content_type", "json")
    if content_type not in ("json", "text"):
        raise MessageMetadataInvalid("content_type must be 'json' or 'text'")
    if content_type == "text" and not isinstance(message["body"], str):
        raise BodyInvalid("a text message body must be a string")
    return OutgoingMessage(
        body=message["body"],
        content_type=content_type,
        delay_seconds=_delay(message, MessageMetadataInvalid),
    )


@dataclass(frozen=True, slots=True)
class BatchInput:
    messages: list[OutgoingMessage]
    delay_seconds: int | None


def parse_batch(body: Any) -> BatchInput:
    raw = _object(body, "the request body")
    messages = raw.get("messages")
    if not isinstance(messages, list):
        raise BodyInvalid("messages must be an array")
    if not 1 <= len(messages) <= MAX_BATCH_MESSAGES:
        raise BatchCountInvalid(f"a batch holds 1..{MAX_BATCH_MESSAGES} messages")
    return BatchInput(
        messages=[parse_message(message) for message in messages],
        delay_seconds=_delay(raw, BatchDelayInvalid),
    )


@dataclass(frozen=True, slots=True)
class PullInput:
    batch_size: int | None
    visibility_timeout_ms: int | None


def parse_pull(body: Any) -> PullInput:
    raw = _object(body, "the request body")
    if "visibility_timeout_ms" not in raw and "visibility_timeout" in raw:
        raw = {**raw, "visibility_timeout_ms": raw["visibility_timeout"]}  # legacy name
    return PullInput(
        batch_size=_bounded(raw, "batch_size", 1, MAX_PULL_BATCH, BodyInvalid, None),
        visibility_timeout_ms=_bounded(
            raw, "visibility_timeout_ms", 1, MAX_VISIBILITY_TIMEOUT_MS, BodyInvalid, None
        ),
    )


def parse_peek(body: Any) -> int:
    raw = _object(body, "the request body")
    size = _bounded(raw, "batch_size", 1, MAX_PULL_BATCH, BodyInvalid, DEFAULT_PULL_BATCH)
    assert size is not None
    return size


def _lease_ids(raw: dict[str, Any], key: str, id_key: str) -> list[dict[str, Any]]:
    items = _optional(raw, key, [])
    if not isinstance(items, list):
        raise BodyInvalid(f"{key} must be an array")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get(id_key), str):
            raise BodyInvalid(f"every entry of {key} needs a string {id_key}")
    return items


@dataclass(frozen=True, slots=True)
class AckInput:
    acks: list[str]
    retries: list[RetryRequest] = field(default_factory=list)


def parse_ack(body: Any) -> AckInput:
    raw = _object(body, "the request body")
    acks = [item["lease_id"] for item in _lease_ids(raw, "acks", "lease_id")]
    retries = [
        RetryRequest(lease_id=item["lease_id"], delay_seconds=_delay(item, MessageMetadataInvalid))
        for item in _lease_ids(raw, "retries", "lease_id")
    ]
    return AckInput(acks=acks, retries=retries)


def parse_refs(body: Any) -> list[str]:
    raw = _object(body, "the request body")
    return [item["ref"] for item in _lease_ids(raw, "refs", "ref")]


# -- responses ----------------------------------------------------------------------------


def timestamp(value: datetime) -> str:
    """RFC 3339 with microseconds, as Cloudflare writes them: 2022-10-30T16:05:14.966372Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Metrics(BaseModel):
    backlog_count: int
    backlog_bytes: int
    oldest_message_timestamp_ms: int

    @classmethod
    def of(cls, metrics: QueueMetrics) -> Metrics:
        return cls(
            backlog_count=metrics.backlog_count,
            backlog_bytes=metrics.backlog_bytes,
            oldest_message_timestamp_ms=metrics.oldest_message_timestamp_ms,
        )


class QueueSettingsOut(BaseModel):
    delivery_delay: int
    delivery_paused: bool
    message_retention_period: int


class ConsumerOut(BaseModel):
    consumer_id: str
    created_on: str
    queue_name: str
    type: ConsumerType
    dead_letter_queue: str  # "" when none is configured
    settings: dict[str, int]  # a setting left to the platform (max_concurrency) is omitted
    script_name: str | None = None


class QueueOut(BaseModel):
    queue_id: str
    queue_name: str
    created_on: str
    modified_on: str
    producers: list[dict[str, str]]
    producers_total_count: int
    consumers: list[ConsumerOut]
    consumers_total_count: int
    settings: QueueSettingsOut
    jurisdiction: str | None = None  # one of JURISDICTIONS, shown only when the queue has one


class PulledMessage(BaseModel):
    id: str
    body: str
    attempts: int
    lease_id: str
    timestamp_ms: int
    metadata: dict[str, str]


class PeekedMessage(BaseModel):
    id: str
    body: str
    attempts: int
    ref: str
    timestamp_ms: int
    metadata: dict[str, str]
