from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import DatabaseSettings
from app.core.db import create_engine

ONE_CONNECTION = "one connection"


@pytest_asyncio.fixture(params=["pooled", ONE_CONNECTION])
async def sqlite_engine(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncEngine]:
    """An engine on `driver.db` in `tmp_path`, as `jobgate serve` makes it (pooled) and as
    `jobgate consume` does (one connection, its statements run on the event loop)."""
    engine = create_engine(
        DatabaseSettings(url=f"sqlite:///{tmp_path / 'driver.db'}"),
        sqlite_single_connection=request.param == ONE_CONNECTION,
    )
    yield engine
    await engine.dispose()
