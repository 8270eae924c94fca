"""Queue topology from a `wrangler.jsonc`: queues, consumer settings and job routing.

Invalid topologies are refused at start-up with a message naming the offending field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import json5
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_DELAY_SECONDS = 86_400
MAX_VISIBILITY_TIMEOUT_MS = 43_200_000
DEFAULT_RETENTION_SECONDS = 345_600
MAX_QUEUE_NAME = 63

QueueName = Annotated[str, Field(min_length=1, max_length=MAX_QUEUE_NAME)]


class TopologyError(ValueError):
    """The topology file is missing, unreadable or invalid."""


class ProducerConfig(BaseModel):
    # strict: `true` or "5" where a number belongs is a typo, not a value.
    model_config = ConfigDict(extra="ignore", strict=True)

    binding: str = Field(min_length=1)
    queue: QueueName


class ConsumerConfig(BaseModel):
    """One `queues.consumers[]` entry, with Cloudflare's limits and defaults."""

    model_config = ConfigDict(extra="ignore", strict=True)

    queue: QueueName
    max_batch_size: int = Field(default=10, ge=1, le=100)
    max_batch_timeout: float = Field(default=5, ge=0, le=60)
    max_retries: int = Field(default=3, ge=0, le=100)
    dead_letter_queue: QueueName | None = None
    retry_delay: int | Literal["exponential"] = 0
    max_concurrency: int | None = Field(default=None, ge=1, le=250)
    # Pull consumers only: how long a pulled batch stays leased.
    visibility_timeout_ms: int = Field(default=30_000, ge=1, le=MAX_VISIBILITY_TIMEOUT_MS)

    @field_validator("retry_delay", mode="plain")
    @classmethod
    def _check_retry_delay(cls, value: object) -> int | Literal["exponential"]:
        # One clear message instead of one error per member of the union.
        if value == "exponential" and isinstance(value, str):
            return "exponential"
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= MAX_DELAY_SECONDS:
                return value
        raise ValueError(f"must be 0..{MAX_DELAY_SECONDS} seconds or 'exponential', not {value!r}")


class QueuesSection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    producers: list[ProducerConfig] = Field(default_factory=list)
    consumers: list[ConsumerConfig] = Field(default_factory=list)


class JobgateSection(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    queues: list[QueueName] = Field(default_factory=list)
    default_dead_letter_queues: bool = True
    delivery_delay: int = Field(default=0, ge=0, le=MAX_DELAY_SECONDS)
    message_retention_period: int = Field(default=DEFAULT_RETENTION_SECONDS, ge=60, le=1_209_600)
    routes: dict[str, str] = Field(default_factory=dict)


class WranglerFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    queues: QueuesSection = Field(default_factory=QueuesSection)
    jobgate: JobgateSection = Field(default_factory=JobgateSection)


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """What the queue engine needs to know about one queue."""

    name: str
    delivery_delay: int
    message_retention_period: int
    max_retries: int
    dead_letter_queue: str | None
    retry_delay: int  # fixed seconds; exponential delays are computed by the consumer


@dataclass(frozen=True, slots=True)
class Topology:
    queues: Mapping[str, QueueSettings]
    consumers: Mapping[str, ConsumerConfig]
    routes: Mapping[str, str]
    producer_bindings: Mapping[str, str]

    def queue_for(self, job_type: str) -> str:
        return self.routes[job_type]

    @property
    def consumed_queues(self) -> list[str]:
        return list(self.consumers)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse_topology(raw: Mapping[str, Any], *, job_types: frozenset[str]) -> Topology:
    try:
        parsed = WranglerFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise TopologyError(f"{_field_path(first['loc'])}: {first['msg']}") from exc

    section = parsed.queues
    jobgate = parsed.jobgate
    known: dict[str, None] = {}
    for producer in section.producers:
        known[producer.queue] = None
    for consumer in section.consumers:
        known[consumer.queue] = None
    for name in jobgate.queues:
        known[name] = None

    consumers: dict[str, ConsumerConfig] = {}
    for index, consumer in enumerate(section.consumers):
        where = f"queues.consumers[{index}]"
        if consumer.queue in consumers:
            raise TopologyError(f"{where}.queue: a second consumer for {consumer.queue!r}")
        dlq = consumer.dead_letter_queue
        if dlq is not None:
            if dlq not in known:
                raise TopologyError(
                    f"{where}.dead_letter_queue: unknown queue {dlq!r} "
                    "(declare it as a producer or under jobgate.queues)"
                )
            if dlq == consumer.queue:
                raise TopologyError(f"{where}.dead_letter_queue: a queue cannot be its own DLQ")
        consumers[consumer.queue] = consumer

    dead_letter_names = {c.dead_letter_queue for c in consumers.values() if c.dead_letter_queue}
    # Every producer queue is consumed; those without an entry get Cloudflare's defaults.
    for producer in section.producers:
        if producer.queue not in consumers:
            consumers[producer.queue] = ConsumerConfig(queue=producer.queue)
    if jobgate.default_dead_letter_queues:
        defaults = {
            name: f"{name}-dlq"
            for name, consumer in consumers.items()
            if consumer.dead_letter_queue is None and name not in dead_letter_names
        }
        # A queue that receives dead letters gets no DLQ of its own (no `-dlq-dlq` chains).
        targets = dead_letter_names | set(defaults.values())
        for name, dlq in defaults.items():
            if name in targets:
                continue
            if len(dlq) > MAX_QUEUE_NAME:
                raise TopologyError(
                    f"jobgate.default_dead_letter_queues: {dlq!r} would exceed "
                    f"{MAX_QUEUE_NAME} characters; set dead_letter_queue for {name!r}"
                )
            consumers[name] = consumers[name].model_copy(update={"dead_letter_queue": dlq})
            known[dlq] = None

    for job_type, queue in jobgate.routes.items():
        if job_type not in job_types:
            raise TopologyError(f"jobgate.routes.{job_type}: unknown job type")
        if queue not in known:
            raise TopologyError(f"jobgate.routes.{job_type}: unknown queue {queue!r}")
    missing = sorted(job_types - set(jobgate.routes))
    if missing:
        raise TopologyError(f"jobgate.routes: no queue for job type(s) {', '.join(missing)}")

    queues: dict[str, QueueSettings] = {}
    for name in known:
        consumer_cfg = consumers.get(name)
        queues[name] = QueueSettings(
            name=name,
            delivery_delay=jobgate.delivery_delay,
            message_retention_period=jobgate.message_retention_period,
            max_retries=consumer_cfg.max_retries if consumer_cfg else 3,
            dead_letter_queue=consumer_cfg.dead_letter_queue if consumer_cfg else None,
            retry_delay=(
                consumer_cfg.retry_delay
                if consumer_cfg and isinstance(consumer_cfg.retry_delay, int)
                else 0
            ),
        )
    return Topology(
        queues=queues,
        consumers=consumers,
        routes=dict(jobgate.routes),
        producer_bindings={p.binding: p.queue for p in section.producers},
    )


def load_topology(path: Path, *, job_types: frozenset[str]) -> Topology:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(f"cannot read queue topology {path}: {exc.strerror}") from exc
    try:
        raw = json5.loads(text)
    except ValueError as exc:
        raise TopologyError(f"{path}: not valid JSONC: {exc}") from exc
    if not isinstance(raw, dict):
        raise TopologyError(f"{path}: the top level must be an object")
    return parse_topology(raw, job_types=job_types)
