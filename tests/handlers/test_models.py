"""The hand-written 0004 migration creates exactly the handler tables the models declare."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import metadata
from app.handlers import models

pytestmark = pytest.mark.asyncio

HANDLER_TABLES = {
    table.name
    for table in (
        models.ShopConnection.__table__,  # type: ignore[attr-defined]
        models.EmailSender.__table__,  # type: ignore[attr-defined]
        models.PsOrder.__table__,  # type: ignore[attr-defined]
        models.PsProduct.__table__,  # type: ignore[attr-defined]
        models.PsSyncState.__table__,  # type: ignore[attr-defined]
        models.AnalyticsEvent.__table__,  # type: ignore[attr-defined]
        models.ImageResult.__table__,  # type: ignore[attr-defined]
        models.EmailDelivery.__table__,  # type: ignore[attr-defined]
    )
}


def _ours(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table in HANDLER_TABLES


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_object": _ours,
        },
    )
    return list(compare_metadata(context, metadata))


async def test_migration_matches_models(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []
