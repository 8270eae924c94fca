"""Running Alembic from code (`jobgate db upgrade`, tests, `make run`)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from app.core.config import DEFAULT_ALEMBIC_INI


def alembic_config(ini: Path = DEFAULT_ALEMBIC_INI) -> Config:
    if not ini.is_file():
        raise FileNotFoundError(f"alembic.ini not found at {ini} (set JOBGATE_ALEMBIC_INI)")
    config = Config(str(ini))
    config.attributes["configure_logger"] = False
    return config


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, ini: Path = DEFAULT_ALEMBIC_INI
) -> None:
    """Migrate the database behind `engine` to `revision`."""
    config = alembic_config(ini)

    def _upgrade(connection: object) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
