"""The background loop shared by caches and samplers: a failed round is logged and the
next one still runs on time; setting the stop event ends the loop without another round."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.core.periodic import run_every

pytestmark = pytest.mark.asyncio


async def test_a_failed_round_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    rounds: list[int] = []

    async def one_round() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("database is away")
        if len(rounds) == 3:
            stop.set()

    logger = logging.getLogger("tests.periodic")
    with caplog.at_level(logging.ERROR, logger="tests.periodic"):
        await asyncio.wait_for(
            run_every(0.01, stop, one_round, what="sampling", logger=logger), timeout=5
        )
    assert rounds == [0, 1, 2]
    failures = [r for r in caplog.records if r.name == "tests.periodic"]
    assert [r.getMessage() for r in failures] == ["sampling failed"]
    assert failures[0].exc_info is not None
    assert "database is away" in str(failures[0].exc_info[1])


async def test_stop_ends_a_long_wait_at_once() -> None:
    stop = asyncio.Event()
    rounds = 0

    async def one_round() -> None:
        nonlocal rounds
        rounds += 1

    task = asyncio.create_task(
        run_every(3600, stop, one_round, what="x", logger=logging.getLogger(__name__))
    )
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert rounds == 1
