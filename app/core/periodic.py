"""Background rounds on a fixed interval, stopped by an event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


async def run_every(
    interval_s: float,
    stop: asyncio.Event,
    one_round: Callable[[], Awaitable[object]],
    *,
    what: str,
    logger: logging.Logger,
) -> None:
    """Run `one_round` now, then every `interval_s` seconds until `stop` is set.

    A failed round is logged (as `what` failed, with its traceback) and never ends the loop:
    the callers are caches and samplers whose readers fall back to reading for themselves.
    """
    while not stop.is_set():
        try:
            await one_round()
        except Exception:
            logger.exception("%s failed", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
