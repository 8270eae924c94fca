"""Request dependencies shared by every domain, as `Annotated` aliases.

The composition root (`app/bootstrap.py`) puts each component on `app.state` once; a route
asks for the one it uses, never for the whole process wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.clock import Clock
from app.core.db import SessionMaker
from app.core.errors import UnsupportedMediaType
from app.core.security import SecretBox
from app.core.storable import is_json_media_type


def component(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency answering the component the composition root put on `app.state.<name>`."""

    async def get(request: Request) -> Any:  # async: FastAPI runs sync ones in a thread
        return getattr(request.app.state, name)

    get.__name__ = f"get_{name}"
    return get


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # Routers commit explicitly before answering; anything uncommitted is rolled back here.
    sessionmaker: SessionMaker = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session


ClockDep = Annotated[Clock, Depends(component("clock"))]
BoxDep = Annotated[SecretBox, Depends(component("box"))]
EngineDep = Annotated[AsyncEngine, Depends(component("engine"))]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON (checked before the body is validated)."""
    content_type = request.headers.get("content-type", "")
    if not is_json_media_type(content_type):
        media_type = content_type.split(";", 1)[0].strip().lower()
        raise UnsupportedMediaType(
            f"send the body as application/json, not {media_type or 'an undeclared type'}"
        )
