"""Handlers by job type, and what a handler gets and may raise.

A handler is `async def handle(ctx: JobContext[SyncOrdersPayload]) -> None`, registered with
`@handler("sync-orders", SyncOrdersPayload)`: each handler is bound to its job type's payload
model, and `ctx.payload` is an instance of it. The stored payload is validated once, when the
consumer takes the message; one that no longer validates (e.g. stored before the model
changed) fails the job at once (`InvalidPayload`), without running the handler or retrying.
It must be idempotent (delivery is at least once). Returning acks the message and marks the
job `succeeded`; `RetryLater(seconds)` retries after that delay (e.g. a downstream 429);
`PermanentFailure(reason)` acks, marks the job `failed` and records why; any other exception
is a transient failure retried with the consumer's backoff until the DLQ.

A batch handler, `@batch_handler("analytics-event", AnalyticsEventPayload)`, is called once
with all the jobs of its type that one pulled batch holds (as Cloudflare hands a Worker its
batch): `async def handle(batch: Sequence[JobContext[P]]) -> BatchOutcomes | None`. It
returns the jobs that did not succeed, each with the exception a single handler would have
raised (`RetryLater`, `PermanentFailure`, any other for a transient failure); the others
succeeded. Raising applies that exception to every job of the call. Settlement, retries,
dead-lettering, the breaker and progress work per job as for a single handler; one call
takes one of the queue's `max_concurrency` slots.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    import httpx

    from app.core.clock import Clock
    from app.core.db import SessionMaker
    from app.core.security import SecretBox
    from app.settings import Settings


class RetryLater(Exception):
    """Retry this job after `delay_seconds` (counts as an attempt)."""

    def __init__(self, delay_seconds: int, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        self.reason = reason


class PermanentFailure(Exception):
    """Do not retry: the job is `failed` with this reason."""


# An invalid payload's error names at most this many fields (a job's `last_error`).
MAX_LISTED_PROBLEMS = 5


class InvalidPayload(PermanentFailure):
    """The stored payload does not validate against the handler's model."""

    @classmethod
    def from_error(
        cls, job_type: str, model: type[BaseModel], exc: ValidationError
    ) -> InvalidPayload:
        errors = exc.errors(include_url=False)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}"
            for error in errors[:MAX_LISTED_PROBLEMS]
        )
        if len(errors) > MAX_LISTED_PROBLEMS:
            problems += f"; and {len(errors) - MAX_LISTED_PROBLEMS} more"
        return cls(f"invalid {job_type} payload ({model.__name__}): {problems}")


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


# A handler's payload model.
P = TypeVar("P", bound=BaseModel)
# A context is read-only, so one for a narrower model is also one for a wider model: a
# helper that needs no payload fields can take `JobContext[BaseModel]`.
P_co = TypeVar("P_co", bound=BaseModel, covariant=True)


@dataclass(frozen=True, slots=True)
class JobContext(Generic[P_co]):
    """What one run of a handler knows about its job."""

    job_id: str
    tenant_id: str
    type: str
    payload: P_co
    attempt: int
    report_progress: ProgressReporter
    resources: Resources
    created_at_ms: int = 0

    async def progress(self, percent: int, message: str | None = None) -> None:
        await self.report_progress(max(0, min(100, percent)), message)


HandlerFunc = Callable[[JobContext[P]], Awaitable[None]]

# What a batch handler reports: job id → why that job did not succeed (the exception a
# single handler would have raised). Jobs not named succeeded.
BatchOutcomes = Mapping[str, BaseException]
BatchHandlerFunc = Callable[[Sequence[JobContext[P]]], Awaitable[BatchOutcomes | None]]


ExceptionTypes = tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class HandlerSpec(Generic[P]):
    job_type: str
    model: type[P]
    func: HandlerFunc[P]
    # Per-handler override of the queue's max_retries; None keeps the topology's.
    max_retries: int | None = None
    # Exceptions that are permanent failures for this handler (never retried).
    throws: ExceptionTypes = ()
    timeout_seconds: float | None = None
    # Set for a batch handler (`func` then runs a batch of one).
    batch_func: BatchHandlerFunc[P] | None = None

    def parse(self, payload: Mapping[str, object]) -> P:
        """The stored payload as the handler's model; `InvalidPayload` when it does not fit."""
        try:
            return self.model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayload.from_error(self.job_type, self.model, exc) from None


# The registry holds handlers of different payload types; each spec keeps its own model and
# function together, so whatever `parse` returns is what that spec's `func` takes.
AnyHandlerSpec = HandlerSpec[Any]


class HandlerRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, AnyHandlerSpec] = {}

    def register(self, spec: AnyHandlerSpec) -> None:
        if spec.job_type in self._specs:
            raise ValueError(f"a handler for {spec.job_type!r} is registered already")
        self._specs[spec.job_type] = spec

    def get(self, job_type: str) -> AnyHandlerSpec | None:
        return self._specs.get(job_type)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._specs)

    @property
    def specs(self) -> list[AnyHandlerSpec]:
        return [self._specs[job_type] for job_type in sorted(self._specs)]

    def handler(
        self,
        job_type: str,
        model: type[P],
        *,
        max_retries: int | None = None,
        throws: ExceptionTypes = (),
        timeout_seconds: float | None = None,
    ) -> Callable[[HandlerFunc[P]], HandlerFunc[P]]:
        """Register the decorated function for `job_type`, taking payloads of `model`."""

        def decorate(func: HandlerFunc[P]) -> HandlerFunc[P]:
            self.register(
                HandlerSpec(
                    job_type=job_type,
                    model=model,
                    func=func,
                    max_retries=max_retries,
                    throws=throws,
                    timeout_seconds=timeout_seconds,
                )
            )
            return func

        return decorate

    def batch_handler(
        self,
        job_type: str,
        model: type[P],
        *,
        max_retries: int | None = None,
        throws: ExceptionTypes = (),
        timeout_seconds: float | None = None,
    ) -> Callable[[BatchHandlerFunc[P]], BatchHandlerFunc[P]]:
        """Register the decorated function for `job_type` as a batch handler (see above)."""

        def decorate(func: BatchHandlerFunc[P]) -> BatchHandlerFunc[P]:
            async def one(ctx: JobContext[P]) -> None:
                outcomes = await func([ctx])
                if outcomes and (exc := outcomes.get(ctx.job_id)) is not None:
                    raise exc

            one.__module__, one.__qualname__ = func.__module__, func.__qualname__
            self.register(
                HandlerSpec(
                    job_type=job_type,
                    model=model,
                    func=one,
                    max_retries=max_retries,
                    throws=throws,
                    timeout_seconds=timeout_seconds,
                    batch_func=func,
                )
            )
            return func

        return decorate


# The process-wide registry the company's handlers register on (app/handlers/).
registry = HandlerRegistry()
handler = registry.handler
batch_handler = registry.batch_handler
