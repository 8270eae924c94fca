"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter

jobs_accepted = Counter(
    "jobgate_jobs_accepted_total", "Jobs stored and handed to a queue.", ["type", "queue"]
)
