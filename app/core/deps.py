"""Request dependencies shared by every domain, as `Annotated` aliases.

The composition root (`app/bootstrap.py`) puts each component on `app.state` once; a route
asks for the one it uses, never for the whole process wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.clock import Clock
from app.core.config import Settings
from app.core.db import SessionMaker
from app.core.errors import UnsupportedMediaType
from app.core.security import SecretBox
from app.core.storable import is_json_media_type


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def get_box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.box
    return box


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # Routers commit explicitly before answering; anything uncommitted is rolled back here.
    sessionmaker: SessionMaker = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
BoxDep = Annotated[SecretBox, Depends(get_box)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON (checked before the body is validated)."""
    content_type = request.headers.get("content-type", "")
    if not is_json_media_type(content_type):
        media_type = content_type.split(";", 1)[0].strip().lower()
        raise UnsupportedMediaType(
            f"send the body as application/json, not {media_type or 'an undeclared type'}"
        )
