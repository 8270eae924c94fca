"""Which queue errors are worth retrying: the table the outbox relay and the client follow."""

from __future__ import annotations

import httpx
import pytest

from app.queues.cloudflare import CloudflareQueues
from app.queues.errors import (
    BatchCountInvalid,
    BatchDelayInvalid,
    BatchTooLarge,
    MessageInvalid,
    MessageTooLarge,
    QueueAuthFailed,
    QueueError,
    QueueNotFound,
    QueueOverloaded,
    QueueRequestInvalid,
    QueueUnavailable,
    Retry,
    classify,
)

R, N = Retry.retryable, Retry.never


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        # Load and outages: retry.
        (429, 971, R),  # global API rate limit
        (429, 10250, R),  # queue overloaded
        (429, 10251, R),  # queue storage full
        (429, None, R),
        (500, 15000, R),
        (502, None, R),
        (503, None, R),  # how a network error is classified
        # The request's content: never.
        (400, 10202, N),  # batch delay invalid
        (400, 10203, N),  # message metadata invalid
        (400, 10204, N),  # message too large
        (413, 10204, N),  # ... as Miniflare answers it
        (400, 10205, N),  # batch too large
        (400, 10206, N),  # batch count out of bounds
        (400, 10207, N),  # body schema invalid
        (400, 10208, N),  # body not JSON
        (400, 10107, N),  # queue id malformed
        (400, None, N),
        (413, None, N),
        (422, None, N),
        (400, 100128, N),  # queue settings: still the request's fault
        # Account and queue configuration an operator can fix: retry (under the relay's cap).
        (403, 10000, R),
        (401, None, R),
        (404, 10104, R),
        (409, 10252, R),
        (404, 7003, R),
        # A 5xx wins over a validation-looking code.
        (500, 10204, R),
    ],
)
def test_classification_table(status: int, code: int | None, expected: Retry) -> None:
    assert classify(status, code) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (MessageTooLarge("big"), N),
        (BatchTooLarge("big"), N),
        (BatchCountInvalid("count"), N),
        (MessageInvalid("bad"), N),
        (BatchDelayInvalid("bad"), N),
        (QueueRequestInvalid("bad"), N),
        (QueueUnavailable("Cloudflare Queues unreachable: ConnectError"), R),
        (QueueOverloaded("slow down"), R),
        (QueueNotFound("gone"), R),
        (QueueAuthFailed("token"), R),
    ],
)
def test_local_engine_errors_classify_by_their_own_code(error: QueueError, expected: Retry) -> None:
    assert error.retry is expected


def _answer(status: int, code: int | None) -> QueueError:
    errors = [{"code": code, "message": "refused"}] if code is not None else []
    response = httpx.Response(
        status,
        json={"success": False, "errors": errors, "messages": [], "result": None},
        request=httpx.Request("POST", "http://cf.test/messages/batch"),
    )
    return CloudflareQueues._error(response)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, 10204, N),
        (413, 10204, N),
        (400, 10208, N),  # mapped to QueueRequestInvalid, keeps the code it was answered
        (413, None, N),  # no class for it: CloudflareApiError, classified by the status
        (400, 12345, N),
        (429, 971, R),
        (500, 15000, R),
        (503, None, R),
        (403, 10000, R),
    ],
)
def test_cloudflare_answers_keep_status_and_code(
    status: int, code: int | None, expected: Retry
) -> None:
    error = _answer(status, code)
    assert (error.backend_status, error.backend_code) == (status, code or error.code)
    assert error.retry is expected
    if code is not None:
        assert f"(code {code})" in error.detail
