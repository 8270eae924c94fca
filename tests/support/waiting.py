"""Polling instead of fixed sleeps: wait until a condition holds, with a generous timeout.

The machine running the suite is shared and noisy, so tests never assume how long something
takes; they poll for the outcome and fail with a message only after `timeout` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

Message = str | Callable[[], str]


def _text(message: Message) -> str:
    return message() if callable(message) else message


async def wait_until(
    predicate: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: Message = "condition not met in time",
) -> T:
    """Poll `predicate` (sync or async) until it returns something truthy; return that.

    `message` (a string, or a callable for state read at the moment of failure) is the
    AssertionError raised once `timeout` seconds have passed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise AssertionError(_text(message))
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: Message = "condition not met in time",
) -> T:
    """`wait_until` for code outside an event loop (subprocess tests with a sync client)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(_text(message))
        time.sleep(interval)
    return value
