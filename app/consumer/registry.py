"""Handlers by job type, and what a handler gets and may raise.

A handler is `async def handle(ctx: JobContext) -> None`, registered with `@handler("type")`.
It must be idempotent (delivery is at least once). Returning acks the message and marks the
job `succeeded`; `RetryLater(seconds)` retries after that delay (e.g. a downstream 429);
`PermanentFailure(reason)` acks, marks the job `failed` and records why; any other exception
is a transient failure retried with the consumer's backoff until the DLQ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx

    from app.core.clock import Clock
    from app.core.config import Settings
    from app.core.db import SessionMaker
    from app.core.security import SecretBox


class RetryLater(Exception):
    """Retry this job after `delay_seconds` (counts as an attempt)."""

    def __init__(self, delay_seconds: int, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        self.reason = reason


class PermanentFailure(Exception):
    """Do not retry: the job is `failed` with this reason."""


class ProgressReporter(Protocol):
    async def __call__(self, percent: int, message: str | None = None) -> None: ...


@dataclass(slots=True)
class Resources:
    """Shared by every handler run in one consumer process."""

    settings: Settings
    sessionmaker: SessionMaker
    http: httpx.AsyncClient
    box: SecretBox
    clock: Clock
    # Per-handler-module state (clients, caches), keyed by module; created lazily.
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class JobContext:
    """What one run of a handler knows about its job."""

    job_id: str
    tenant_id: str
    type: str
    payload: dict[str, Any]
    attempt: int
    report_progress: ProgressReporter
    resources: Resources
    created_at_ms: int = 0

    async def progress(self, percent: int, message: str | None = None) -> None:
        await self.report_progress(max(0, min(100, percent)), message)


HandlerFunc = Callable[[JobContext], Awaitable[None]]


ExceptionTypes = tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    job_type: str
    func: HandlerFunc
    # Per-handler override of the queue's max_retries; None keeps the topology's.
    max_retries: int | None = None
    # Exceptions that are permanent failures for this handler (never retried).
    throws: ExceptionTypes = ()
    timeout_seconds: float | None = None


class HandlerRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}

    def register(self, spec: HandlerSpec) -> None:
        if spec.job_type in self._specs:
            raise ValueError(f"a handler for {spec.job_type!r} is registered already")
        self._specs[spec.job_type] = spec

    def get(self, job_type: str) -> HandlerSpec | None:
        return self._specs.get(job_type)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._specs)

    def handler(
        self,
        job_type: str,
        *,
        max_retries: int | None = None,
        throws: ExceptionTypes = (),
        timeout_seconds: float | None = None,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        def decorate(func: HandlerFunc) -> HandlerFunc:
            self.register(
                HandlerSpec(
                    job_type=job_type,
                    func=func,
                    max_retries=max_retries,
                    throws=throws,
                    timeout_seconds=timeout_seconds,
                )
            )
            return func

        return decorate


# The process-wide registry the company's handlers register on (app/handlers/).
registry = HandlerRegistry()
handler = registry.handler
