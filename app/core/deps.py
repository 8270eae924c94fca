"""Request dependencies shared by every domain, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.bootstrap import Runtime
from app.core.errors import UnsupportedMediaType
from app.core.storable import is_json_media_type


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    # Routers commit explicitly before answering; anything uncommitted is rolled back here.
    async with runtime.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON (checked before the body is validated)."""
    content_type = request.headers.get("content-type", "")
    if not is_json_media_type(content_type):
        media_type = content_type.split(";", 1)[0].strip().lower()
        raise UnsupportedMediaType(
            f"send the body as application/json, not {media_type or 'an undeclared type'}"
        )
