"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

jobs_accepted = Counter(
    "jobgate_jobs_accepted_total", "Jobs stored and handed to a queue.", ["type", "queue"]
)

# Admission control (app/admission): refusals at the door, and what the gateway sees of queues.
admission_refusals = Counter(
    "jobgate_admission_refusals_total",
    "Requests refused before anything was stored, by reason "
    "(rate_limit, quota, queue_depth, breaker, unknown).",
    ["reason", "route_class"],
)
admission_webhooks_delayed = Counter(
    "jobgate_admission_webhooks_delayed_total",
    "Webhook deliveries admitted with a delay because a circuit breaker was open.",
)
admission_queue_backlog = Gauge(
    "jobgate_admission_queue_backlog_messages",
    "Backlog of a queue at the last admission sample (queue plus unpublished outbox rows).",
    ["queue"],
)
admission_queue_open = Gauge(
    "jobgate_admission_queue_open",
    "1 while a queue admits new jobs, 0 while it is above its high watermark.",
    ["queue"],
)

# Outbox relay (app/outbox): what reaches Cloudflare, and in how many requests.
outbox_published_messages = Counter(
    "jobgate_outbox_published_messages_total", "Outbox rows published to the queue backend."
)
outbox_publish_requests = Counter(
    "jobgate_outbox_publish_requests_total",
    "Publish (messages/batch) calls made by the relay, by outcome.",
    ["outcome"],
)
outbox_failed_messages = Counter(
    "jobgate_outbox_failed_messages_total",
    "Outbox rows given up on, their jobs failed: refused by the queue backend (rejected) "
    "or out of publish attempts (attempts).",
    ["reason"],
)
outbox_oldest_unpublished_age = Gauge(
    "jobgate_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest outbox row not yet published (0 when none), at the relay's last look.",
)
