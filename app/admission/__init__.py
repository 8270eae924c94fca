"""Admission control: per-tenant rate limits and quotas, queue-depth backpressure, and the
consumer's circuit breaker, applied at the door before anything is stored."""
