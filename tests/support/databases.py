"""Throwaway PostgreSQL schemas for tests and benchmarks."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.core.config import DatabaseSettings
from app.core.db import create_engine


def postgres_url_from_env() -> str | None:
    """JOBGATE_DATABASE_URL when it points at PostgreSQL, else None (SQLite is the default)."""
    raw = os.environ.get("JOBGATE_DATABASE_URL", "")
    if raw and make_url(raw).get_backend_name() in ("postgresql", "postgres"):
        return raw
    return None


async def _create_or_drop(url: str, schema: str, *, create: bool) -> None:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as conn:
            if create:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            else:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


@contextmanager
def fresh_pg_schema(url: str, prefix: str) -> Iterator[str]:
    """A new schema `<prefix>_<pid>_<hex>`, dropped with everything in it on exit."""
    schema = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_create_or_drop(url, schema, create=True))
    try:
        yield schema
    finally:
        asyncio.run(_create_or_drop(url, schema, create=False))
