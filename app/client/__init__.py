"""Python client of the jobgate jobs API: `JobgateClient` (sync), `AsyncJobgateClient`."""

from app.client.calls import RetryPolicy
from app.client.client import AsyncJobgateClient, JobgateClient, Submitted
from app.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayUnreachable,
    JobgateError,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

__all__ = [
    "AsyncJobgateClient",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "GatewayUnreachable",
    "JobgateClient",
    "JobgateError",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "RateLimited",
    "RetryPolicy",
    "Submitted",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
]
